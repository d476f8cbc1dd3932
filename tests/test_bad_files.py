"""Broken files and test sets are refused before any adaptation, naming the task and the file, and nothing the
user had is changed."""

from __future__ import annotations

import shutil

import pytest
from conftest import cpu_fabric, load_pool
from fusion_bench.utils import instantiate
from omegaconf import OmegaConf

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.core.errors import TintingConfigError


def _text_pool(tiny_text):
    import fusion_bench_tinting  # noqa: F401

    return instantiate(OmegaConf.load(tiny_text / "config" / "modelpool" / "tiny-roberta_glue.yaml"), _recursive_=False)


def _run(pool):
    algorithm = ModelTintingAlgorithm(max_steps=1)
    algorithm.fabric = cpu_fabric()
    return algorithm.run(pool)


def _copy_checkpoint(pool, task, tmp_path):
    source = pool._models[task]["pretrained_model_name_or_path"]
    copy = tmp_path / f"{task}_copy"
    shutil.copytree(source, copy)
    pool._models[task]["pretrained_model_name_or_path"] = str(copy)
    return copy


def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_truncated_model_file_names_the_task_and_the_file(tiny_text, tmp_path):
    pool = _text_pool(tiny_text)
    copy = _copy_checkpoint(pool, "cola", tmp_path)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = _snapshot(copy)
    with pytest.raises(TintingConfigError, match=rf"the model of task 'cola' \({copy}\) could not be read: "):
        _run(pool)
    assert _snapshot(copy) == before


def test_a_head_that_cannot_be_built_is_named_as_the_head_not_the_model(tiny_text, monkeypatch):
    from fusion_bench_tinting.families.sequence_classification import SequenceClassificationFamily

    def no_head(self, task):
        raise KeyError(f"no class names for {task}")

    monkeypatch.setattr(SequenceClassificationFamily, "load_head", no_head)
    with pytest.raises(
        TintingConfigError, match=r"the head of task '\w+' \(from .*\) could not be read: .*no class names"
    ):
        _run(_text_pool(tiny_text))


def test_a_config_that_disagrees_with_its_weights_names_the_task(tiny_text, tmp_path):
    import json

    pool = _text_pool(tiny_text)
    copy = _copy_checkpoint(pool, "sst2", tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config["hidden_size"] = 48
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(TintingConfigError, match=rf"the model of task 'sst2' \({copy}\) could not be read"):
        _run(pool)


def test_an_empty_test_set_is_refused(tiny_text, tmp_path):
    from datasets import load_from_disk

    pool = _text_pool(tiny_text)
    source = pool._test_datasets["sst2"]["dataset_path"]
    rows = load_from_disk(source)
    load = pool.load_test_dataset
    pool.load_test_dataset = lambda name, *args, **kwargs: (
        rows.select([]) if name == "sst2" else load(name, *args, **kwargs)
    )
    with pytest.raises(TintingConfigError, match=rf"The test set of task 'sst2' \({source}\) is empty"):
        _run(pool)
    pool.load_test_dataset = load
    # saved to disk, datasets cannot even open it: the error still names the task and the folder
    empty = tmp_path / "empty"
    rows.select([]).save_to_disk(str(empty))
    pool._test_datasets["sst2"] = OmegaConf.create({"_target_": "datasets.load_from_disk", "dataset_path": str(empty)})
    with pytest.raises(TintingConfigError, match=rf"the test set of task 'sst2' \({empty}\) could not be read"):
        _run(pool)


def test_an_unreadable_test_set_names_the_task_and_the_folder(tiny_text, tmp_path):
    pool = _text_pool(tiny_text)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset_info.json").write_text("{not json")
    pool._test_datasets["cola"]["dataset_path"] = str(broken)
    with pytest.raises(TintingConfigError, match=rf"the test set of task 'cola' \({broken}\) could not be read"):
        _run(pool)


def test_labels_outside_the_heads_classes_are_found_before_adaptation(tiny_suites, tmp_path):
    from datasets import load_from_disk

    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    dataset = load_from_disk(pool._test_datasets["stl10"]["dataset_path"])
    shifted = tmp_path / "stl10_shifted"
    dataset.cast_column("label", dataset.features["label"].__class__(num_classes=17)).map(
        lambda row: {"label": 16}
    ).save_to_disk(str(shifted))
    pool._test_datasets["stl10"]["dataset_path"] = str(shifted)
    with pytest.raises(
        TintingConfigError, match=r"task 'stl10' .* has labels 16..16, but the task's head has 10 classes"
    ):
        _run(pool)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda ids, config: [ids[0], config["vocab_size"] + 5, *ids[1:]],
            r"has token ids up to \d+, but the model's vocabulary has \d+ tokens",
        ),
        (
            lambda ids, config: ids + [ids[-1]] * config["max_position_embeddings"],
            r"has sequences of \d+ tokens, but the model reads at most \d+",
        ),
    ],
    ids=["token id outside the vocabulary", "sequence longer than the positions"],
)
def test_token_ids_the_model_cannot_read_are_refused_before_the_teacher_pass(tiny_text, tmp_path, change, message):
    import json

    from datasets import load_from_disk

    pool = _text_pool(tiny_text)
    config = json.loads((tiny_text / "roberta" / "cola" / "config.json").read_text())
    source = pool._test_datasets["cola"]["dataset_path"]
    changed = tmp_path / "cola_retokenized"

    def retokenize(row):
        ids = change(list(row["input_ids"]), config)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    load_from_disk(source).map(retokenize).save_to_disk(str(changed))
    pool._test_datasets["cola"]["dataset_path"] = str(changed)
    with pytest.raises(TintingConfigError, match=rf"test set of task 'cola' \({changed}\) {message}"):
        _run(pool)


def test_images_of_another_size_than_the_model_reads_are_refused(tiny_suites, tmp_path):
    import json

    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    processor = tmp_path / "processor"
    shutil.copytree(pool._processor, processor)
    settings = json.loads((processor / "processor_config.json").read_text())
    settings["image_processor"]["crop_size"] = {"height": 24, "width": 24}
    (processor / "processor_config.json").write_text(json.dumps(settings))
    pool._processor = str(processor)
    with pytest.raises(
        TintingConfigError,
        match=r"images of task 'eurosat' .* have shape \(3, 24, 24\), but the model expects \(3, 32, 32\)",
    ):
        _run(pool)


def test_a_model_the_hub_would_have_to_provide_is_reported_as_unreachable_with_the_ways_forward(tiny_suites, tmp_path):
    from conftest import run_cli_subprocess

    args = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "modelpool.models.eurosat=nobody/absent-model",
    ]
    result = run_cli_subprocess(
        args, tmp_path / "log", check=False, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    )
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode == 2
    assert last.startswith(
        "Cannot fetch from the model hub: the model of task 'eurosat' (nobody/absent-model) is not in "
        "the local Hugging Face cache and the hub cannot be reached"
    )
    assert "fusion-bench-tinting-hub-ids --suite" in last and "modelpool=minilm_text" in last
    assert "Configuration error" not in last


def test_the_hub_ids_of_a_suite_become_download_lines():
    from fusion_bench_tinting.hub_ids import download_lines

    config = {
        "modelpool": {
            "_target_": "fusion_bench.modelpool.CLIPVisionModelPool",
            "models": {
                "_pretrained_": "openai/clip-vit-base-patch32",
                "svhn": {"pretrained_model_name_or_path": "tanganke/m_svhn"},
                "local": "/tmp",
            },
            "test_datasets": {
                "svhn": {"_target_": "datasets.load_dataset", "_args_": ["svhn", "cropped_digits"], "split": "test"},
                "sun397": {"_target_": "datasets.load_dataset", "path": "tanganke/sun397", "split": "test"},
            },
        },
        "taskpool": {"clip_model": "openai/clip-vit-base-patch32"},
    }
    assert download_lines(config) == [
        "huggingface-cli download openai/clip-vit-base-patch32",
        "huggingface-cli download tanganke/m_svhn",
        "huggingface-cli download --repo-type dataset svhn",
        "huggingface-cli download --repo-type dataset tanganke/sun397",
    ]
