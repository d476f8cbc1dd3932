"""Adapting on another split of the model pool than the test split the task pool scores (adaptation_data)."""

from __future__ import annotations

import pytest
from conftest import cpu_fabric, load_pool, run_cli

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.core.teacher_pass import TeacherPass
from fusion_bench_tinting.offline.splits import disjoint_splits


def _count_teacher_inputs(monkeypatch):
    """Record, per task, how many inputs the teacher pass ran the fine-tuned model over."""
    seen = {}
    original = TeacherPass._teacher_outputs

    def counting(self, family, encoder, head, inputs, device):
        teacher = original(self, family, encoder, head, inputs, device)
        seen[len(seen)] = (family.adaptation_split, len(inputs), teacher.shape[0])
        return teacher

    monkeypatch.setattr(TeacherPass, "_teacher_outputs", counting)
    return seen


def test_adapting_on_the_train_split_reads_exactly_those_inputs_and_the_report_says_so(
    tiny_suites, tmp_path, monkeypatch
):
    from datasets import load_from_disk

    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    train_sizes = {t: len(load_from_disk(pool._train_datasets[t]["dataset_path"])) for t in pool.model_names}
    test_sizes = {t: len(load_from_disk(pool._test_datasets[t]["dataset_path"])) for t in pool.model_names}
    assert train_sizes != test_sizes
    seen = _count_teacher_inputs(monkeypatch)
    report = run_cli(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=model_tinting",
            "modelpool=tiny-clip_TA4",
            "method.max_steps=2",
            "method.adaptation_data=train",
        ],
        tmp_path / "log",
    )
    assert sorted(n for _, n, _ in seen.values()) == sorted(train_sizes.values())
    assert all(split == "train" and n == rows for split, n, rows in seen.values())
    described = report["adaptation"]["adaptation_data"]
    assert described == {"split": "train", "transductive": False, "inputs_per_task": train_sizes}
    assert set(test_sizes) <= set(report)  # scored on the test splits, every task


def test_a_split_the_pool_lacks_fails_before_any_model_is_loaded_listing_the_splits_it_has(tiny_suites, monkeypatch):
    from fusion_bench_tinting.core.families.hf_clip import HFCLIPVisionFamily

    monkeypatch.setattr(HFCLIPVisionFamily, "load_encoder", lambda *a: pytest.fail("a model was loaded"))
    algorithm = ModelTintingAlgorithm(adaptation_data="val", max_steps=1)
    algorithm.fabric = cpu_fabric()
    with pytest.raises(
        TintingConfigError, match=r"adaptation_data=val: task '\w+' has no val dataset .*it has \['test', 'train'\]"
    ):
        algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))


def test_an_unknown_split_is_refused_when_the_method_is_built():
    with pytest.raises(
        TintingConfigError, match=r"method.adaptation_data='validation': one of \['test', 'val', 'train'\]"
    ):
        ModelTintingAlgorithm(adaptation_data="validation")


def test_an_adaptation_split_that_is_the_test_data_is_warned_about_with_the_count(tiny_suites, caplog):
    from datasets import load_from_disk

    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    pool._val_datasets = pool._test_datasets  # the same inputs under another name
    algorithm = ModelTintingAlgorithm(adaptation_data="val", max_steps=0)
    algorithm.fabric = cpu_fabric()
    algorithm.run(pool)
    size = len(load_from_disk(pool._test_datasets["eurosat"]["dataset_path"]))
    assert (
        f"Task eurosat: {size} of the {size} adaptation inputs (method.adaptation_data=val) are also test inputs"
        in caplog.text
    )


def test_a_train_split_apart_from_the_test_split_is_not_warned_about(tiny_suites, caplog):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    algorithm = ModelTintingAlgorithm(adaptation_data="train", max_steps=0)
    algorithm.fabric = cpu_fabric()
    algorithm.run(pool)
    assert "are also test inputs" not in caplog.text


@pytest.mark.parametrize("count, expected_train", [(5000, 2000), (2166, 1166)])
def test_builders_splits_are_disjoint_and_the_adaptation_split_as_large_as_the_test_split(count, expected_train):
    test, train, adaptation = disjoint_splits(count, 500, 2000)
    indices = [set(range(count)[s]) for s in (test, train, adaptation)]
    assert len(indices[0]) == len(indices[2]) == 500 and len(indices[1]) == expected_train
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    with pytest.raises(ValueError, match="not enough samples"):
        disjoint_splits(1050, 500, 2000)
