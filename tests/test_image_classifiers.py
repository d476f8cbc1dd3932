"""FusionBench's image-classifier pools (transformers ConvNeXt, DINOv2, ResNet; torchvision ResNet) through the CLI."""

from __future__ import annotations

import shutil

import pytest
from conftest import run_cli, task_accuracies

from fusion_bench_tinting.testing.tiny_suites import TASKS


def _run(tiny_image_suites, tmp_path, name, *overrides):
    args = ["--config-dir", str(tiny_image_suites / "config"), *overrides]
    return run_cli(args, tmp_path / name)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["convnext", "dinov2", "resnet"])
def test_both_methods_beat_the_initial_task_arithmetic_merge(tiny_image_suites, tmp_path, architecture):
    """Each task is evaluated with its own head; ``max_steps=0`` is Task Arithmetic (coefficients 0.3) with the
    fine-tuned heads, the merge adaptation starts from."""
    suite = [f"modelpool=tiny-{architecture}_TA4", f"taskpool=tiny-{architecture}_TA4"]
    merged = _run(tiny_image_suites, tmp_path, "ta", "method=model_tinting", *suite, "method.max_steps=0")
    for method in ("model_tinting", "model_tinting_plusplus"):
        tinted = _run(tiny_image_suites, tmp_path, method, f"method={method}", *suite, "method.max_steps=10")
        assert list(task_accuracies(tinted)) == list(TASKS)
        assert tinted["average"]["accuracy"] > merged["average"]["accuracy"] + 0.05, (
            method,
            tinted["average"],
            merged["average"],
        )
        assert tinted["adaptation"]["iterations"] == 10 and tinted["adaptation"]["method"] == method


@pytest.mark.slow
def test_plusplus_and_fusion_bench_task_arithmetic_with_one_spelling(tiny_image_suites, tmp_path):
    """``+suite=`` runs ours and FusionBench's Task Arithmetic; both are evaluated per task with their heads."""
    plusplus = _run(
        tiny_image_suites,
        tmp_path,
        "pp",
        "method=model_tinting_plusplus",
        "+suite=tiny-dinov2_TA4",
        "method.max_steps=10",
    )
    baseline = _run(tiny_image_suites, tmp_path, "ta", "method=task_arithmetic", "+suite=tiny-dinov2_TA4")
    assert set(plusplus["adaptation"]["filter_dropped_fraction"]) == set(TASKS)
    assert set(task_accuracies(baseline)) == set(TASKS)
    assert plusplus["average"]["accuracy"] > baseline["average"]["accuracy"]


@pytest.mark.slow
def test_torchvision_resnet_pool_tinting_beats_fusion_bench_task_arithmetic(tiny_torchvision_suite, tmp_path):
    """A torchvision ResNet-18 pool (fine-tuned state dicts): both methods and FusionBench's Task Arithmetic
    with one spelling, each task scored with its own head."""
    baseline = _run(tiny_torchvision_suite, tmp_path, "ta", "method=task_arithmetic", "+suite=tiny-torchvision_TA4")
    assert set(task_accuracies(baseline)) == set(TASKS)
    for method in ("model_tinting", "model_tinting_plusplus"):
        tinted = _run(
            tiny_torchvision_suite,
            tmp_path,
            method,
            f"method={method}",
            "+suite=tiny-torchvision_TA4",
            "method.max_steps=5",
        )
        assert list(task_accuracies(tinted)) == list(TASKS)
        assert tinted["average"]["accuracy"] > baseline["average"]["accuracy"] + 0.05, (
            method,
            tinted["average"],
            baseline["average"],
        )
    assert set(tinted["adaptation"]["filter_dropped_fraction"]) == set(TASKS)


def _pool(tiny_image_suites, architecture):
    from fusion_bench.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(tiny_image_suites / "config" / "modelpool" / f"tiny-{architecture}_TA4.yaml")
    return instantiate(config, _recursive_=False)


def _adapt(pool):
    from conftest import cpu_fabric

    from fusion_bench_tinting import ModelTintingAlgorithm

    algorithm = ModelTintingAlgorithm(max_steps=1)
    algorithm.fabric = cpu_fabric()
    return algorithm.run(pool)


def test_a_model_of_another_architecture_is_refused_naming_it(tiny_image_suites):
    from fusion_bench_tinting.core.errors import TintingConfigError

    pool = _pool(tiny_image_suites, "convnext")
    pool._models["stl10"] = str(tiny_image_suites / "resnet" / "stl10")
    with pytest.raises(
        TintingConfigError,
        match="Model 'stl10' is a ResNetForImageClassification but _pretrained_ is a ConvNextForImageClassification",
    ):
        _adapt(pool)


def test_fusion_bench_s_own_torchvision_pool_is_refused_with_the_pool_that_loads_checkpoints(tiny_image_suites):
    from fusion_bench_tinting.core.errors import TintingConfigError

    pool = _pool(tiny_image_suites, "resnet")
    pool.type = "torchvision"
    with pytest.raises(
        TintingConfigError,
        match="modelpool.type='torchvision'.*use _target_: fusion_bench_tinting.modelpools.TorchvisionResNetPool",
    ):
        _adapt(pool)


def test_a_fine_tuned_model_without_a_head_is_refused_naming_the_task(tiny_image_suites, tmp_path):
    import json

    from fusion_bench_tinting.core.errors import TintingConfigError

    headless = tmp_path / "cifar10_headless"
    shutil.copytree(tiny_image_suites / "convnext" / "cifar10", headless)
    config = json.loads((headless / "config.json").read_text())
    config.update(num_labels=0, id2label={}, label2id={})
    (headless / "config.json").write_text(json.dumps(config))
    pool = _pool(tiny_image_suites, "convnext")
    pool._models["cifar10"] = str(headless)
    with pytest.raises(TintingConfigError, match="The model of task 'cifar10' has no classification head"):
        _adapt(pool)
