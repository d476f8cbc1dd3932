"""The real offline text suite: the quick build, its caching, and Model Tinting beating task arithmetic."""

import json

import pytest
import torch
from conftest import run_cli

from fusion_bench_tinting.offline.minilm_text import TASKS, MiniLMTextSpec, build_minilm_text


@pytest.fixture(scope="session")
def quick_minilm_text(tmp_path_factory):
    return build_minilm_text(tmp_path_factory.mktemp("minilm_text"), MiniLMTextSpec.quick())


@pytest.mark.slow
def test_quick_build_is_complete_and_cached(quick_minilm_text):
    stamp = quick_minilm_text / "suite.json"
    summary = json.loads(stamp.read_text())["tasks"]
    assert list(summary) == list(TASKS)
    assert all(v["test"] == MiniLMTextSpec.quick().test_size for v in summary.values())
    assert len(summary["health_news_outlet"]["classes"]) == 16 and len(summary["news_site"]["classes"]) == 9
    before = stamp.stat().st_mtime_ns
    assert build_minilm_text(quick_minilm_text, MiniLMTextSpec.quick()) == quick_minilm_text
    assert stamp.stat().st_mtime_ns == before  # reused, not rebuilt


@pytest.mark.slow
def test_model_tinting_beats_task_arithmetic_on_the_quick_suite(quick_minilm_text, tmp_path, monkeypatch):
    """Through the shipped `modelpool=minilm_text` config. Few adaptation steps fit in CI, so the learning
    rate is raised from the reference 5e-4 (which needs the reference 1000 iterations)."""
    monkeypatch.setenv("FUSION_BENCH_TINTING_MINILM_TEXT", str(quick_minilm_text))
    task_arithmetic = run_cli(
        ["method=task_arithmetic", "modelpool=minilm_text", "taskpool=minilm_text"], tmp_path / "ta"
    )
    tinting = run_cli(
        [
            "method=model_tinting",
            "modelpool=minilm_text",
            "method.max_steps=8",
            "method.lr=0.01",
            "method.batch_size=16",
        ],
        tmp_path / "mt",
    )
    assert set(tinting) >= set(TASKS)
    assert tinting["average"]["score"] > task_arithmetic["average"]["score"], (
        tinting["average"],
        task_arithmetic["average"],
    )


@pytest.mark.parametrize("train_embeddings", [False, True])
def test_fine_tuning_trains_the_word_embeddings_only_in_the_strong_variant(train_embeddings):
    from fusion_bench_tinting.offline.minilm_text import finetune, tokenized_dataset
    from fusion_bench_tinting.testing.tiny_text import tiny_classifier, tiny_tokenizer

    assert MiniLMTextSpec.strong().train_embeddings and not MiniLMTextSpec().train_embeddings
    assert MiniLMTextSpec.strong().finetune_steps == 5 * MiniLMTextSpec().finetune_steps
    tokenizer = tiny_tokenizer("bert")
    examples = [("good movie", 1), ("bad day", 0), ("the great song", 1), ("a sad tree", 0)] * 4
    dataset = tokenized_dataset(examples, ["negative", "positive"], tokenizer, max_length=8)
    model = tiny_classifier("bert", tokenizer, num_labels=2, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec = MiniLMTextSpec(finetune_steps=3, batch_size=4, finetune_lr=1e-2, train_embeddings=train_embeddings)
    model = finetune(model, dataset, tokenizer, spec, seed=0, desc="test", device=torch.device("cpu"))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert ("bert.embeddings.word_embeddings.weight" in changed) is train_embeddings
    assert "bert.encoder.layer.0.attention.self.query.weight" in changed


@pytest.mark.slow
def test_a_build_split_over_task_lists_equals_one_build(quick_minilm_text, tmp_path):
    """Processes given disjoint --tasks lists build one suite: each task's model is the one a full build makes,
    and the suite is stamped only when the last task is built."""
    from safetensors.torch import load_file

    split = tmp_path / "split"
    build_minilm_text(split, MiniLMTextSpec.quick(), tasks=("news_site",))
    assert not (split / "suite.json").exists()
    assert list(json.loads((split / "progress.json").read_text())["tasks"]) == ["news_site"]
    build_minilm_text(split, MiniLMTextSpec.quick(), tasks=TASKS[:-1])
    assert list(json.loads((split / "suite.json").read_text())["tasks"]) == list(TASKS)
    for task in ("news_site", "movie_sentiment"):
        ours = load_file(split / "models" / task / "model.safetensors")
        full = load_file(quick_minilm_text / "models" / task / "model.safetensors")
        assert all(torch.equal(ours[k], full[k]) for k in full), task


def test_an_unknown_task_is_refused_before_anything_is_built(tmp_path):
    with pytest.raises(ValueError, match="unknown minilm_text task.*movie_sentiment"):
        build_minilm_text(tmp_path / "suite", MiniLMTextSpec.quick(), tasks=("movie_sentiment", "imdb"))
    assert not (tmp_path / "suite").exists()


def test_a_build_of_other_settings_is_wiped_and_one_of_the_same_is_kept(tmp_path):
    """A second process of the same build keeps the first one's finished tasks; other settings start afresh."""
    from dataclasses import asdict

    from fusion_bench_tinting.offline.minilm_text import _read_progress, _reset_if_other_spec

    quick, strong = MiniLMTextSpec.quick(), MiniLMTextSpec.strong()
    (tmp_path / "models" / "news_site").mkdir(parents=True)
    (tmp_path / "progress.json").write_text(json.dumps({"spec": asdict(quick), "tasks": {"news_site": {}}}))
    _reset_if_other_spec(tmp_path, quick)
    assert (tmp_path / "models" / "news_site").is_dir()
    assert list(_read_progress(tmp_path, quick)["tasks"]) == ["news_site"]
    _reset_if_other_spec(tmp_path, strong)
    assert not (tmp_path / "models").exists()
    assert json.loads((tmp_path / "progress.json").read_text()) == {"spec": asdict(strong), "tasks": {}}
    assert _read_progress(tmp_path, quick)["tasks"] == {}


def _hashes(folder, column):
    import hashlib

    from datasets import load_from_disk

    return [hashlib.sha256(repr(value).encode()).hexdigest() for value in load_from_disk(str(folder))[column]]


@pytest.mark.slow
def test_the_adaptation_split_is_as_large_as_test_and_shares_no_input_with_test_or_fine_tuning(quick_minilm_text):
    for task in TASKS:
        data = quick_minilm_text / "data" / task
        test, train, val = (_hashes(data / split, "input_ids") for split in ("test", "train", "val"))
        assert len(val) == len(test) == MiniLMTextSpec.quick().test_size
        assert not set(val) & set(test) and not set(val) & set(train) and not set(test) & set(train), task
