"""FusionBench's NYUv2 model pool and task pool (dense prediction) through the CLI, and its bad inputs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import cpu_fabric, run_cli
from omegaconf import OmegaConf

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.testing.tiny_nyuv2 import SUITE, TASKS, TinyNYUv2Spec, build_tiny_nyuv2, torch_home


@pytest.fixture(scope="module")
def tiny_nyuv2(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_nyuv2")
    build_tiny_nyuv2(root, TinyNYUv2Spec(train_size=8, val_size=4))
    return root


def _cli(tiny_nyuv2, monkeypatch, folder, *overrides):
    monkeypatch.setenv("TORCH_HOME", str(torch_home(tiny_nyuv2)))
    return run_cli(["--config-dir", str(tiny_nyuv2 / "config"), f"+suite={SUITE}", *overrides], folder)


@pytest.mark.slow
def test_model_tinting_beats_task_arithmetic_on_every_nyuv2_task(tiny_nyuv2, tmp_path, monkeypatch):
    """FusionBench's own NYUv2ModelPool and NYUv2TaskPool (made task-aware), every task's metrics with its tinted
    decoder. FusionBench 0.2.33's Task Arithmetic stops on this pool (integer BatchNorm counters), so the baseline
    is the same merge without adaptation: Task Arithmetic at 0.3 with each task's fine-tuned decoder. 15
    iterations, one optimizer step per task each."""
    start = _cli(tiny_nyuv2, monkeypatch, tmp_path / "ta", "method=model_tinting", "method.max_steps=0")
    tinted = _cli(tiny_nyuv2, monkeypatch, tmp_path / "mt", "method=model_tinting", "method.max_steps=15")
    assert tinted["val/segmentation_mIoU"] > start["val/segmentation_mIoU"], (tinted, start)
    for error in ("val/depth_abs_err", "val/normal_mean"):
        assert tinted[error] < start[error], (error, tinted[error], start[error])
    assert tinted["adaptation"]["lr"] == 1e-4  # the family's own default
    assert (tmp_path / "mt" / "lightning_logs").is_dir() and not (tmp_path / "lightning_logs").exists()  # cwd: tmp_path


@pytest.mark.slow
def test_plusplus_filters_segmentation_pixels_only(tiny_nyuv2, tmp_path, monkeypatch):
    """The ++ filter decides per pixel on segmentation and leaves depth and normals (regressions) alone."""
    report = _cli(tiny_nyuv2, monkeypatch, tmp_path / "pp", "method=model_tinting_plusplus", "method.max_steps=1")
    adaptation = report["adaptation"]
    assert set(adaptation["final_loss_per_task"]) == set(TASKS)
    dropped = adaptation["filter_dropped_fraction"]
    assert dropped["depth"] == 0.0 and dropped["normal"] == 0.0 and 0.0 <= dropped["segmentation"] < 1.0
    assert "val/segmentation_pixAcc" in report


def _pool(models):
    from fusion_bench.utils import instantiate

    config = {"_target_": "fusion_bench.modelpool.nyuv2_modelpool.NYUv2ModelPool", "models": models}
    return instantiate(OmegaConf.create(config), _recursive_=False)


def _run(pool):
    algorithm = ModelTintingAlgorithm(max_steps=1)
    algorithm.fabric = cpu_fabric()
    return algorithm.run(pool)


PRETRAINED = {"encoder": "resnet50", "decoders": list(TASKS), "ckpt_path": None}


def test_a_task_name_fusion_bench_s_nyuv2_does_not_know_is_refused_naming_the_known_ones():
    pool = _pool({"_pretrained_": PRETRAINED, "depth_map": {"encoder": "resnet50", "decoders": ["depth"]}})
    with pytest.raises(TintingConfigError, match="Task 'depth_map' .* not a NYUv2 task .*depth, normal, segmentation"):
        _run(pool)


def test_a_task_without_its_decoder_is_refused_before_any_model_is_loaded():
    pool = _pool({"_pretrained_": PRETRAINED, "depth": {"encoder": "resnet50", "decoders": ["segmentation"]}})
    with pytest.raises(
        TintingConfigError,
        match=r"The model of task 'depth' has no 'depth' decoder \(its decoders: \['segmentation'\]\)",
    ):
        _run(pool)


def test_a_run_without_the_nyuv2_task_pool_or_its_images_is_refused_saying_where_they_are_looked_for(tmp_path):
    import torch

    from fusion_bench_tinting.families.nyuv2 import NYUv2Family

    pool = _pool({"_pretrained_": PRETRAINED, "depth": {"encoder": "resnet50", "decoders": ["depth"]}})
    with pytest.raises(TintingConfigError, match="task pool config has no `data_dir`.*taskpool=nyuv2_taskpool"):
        _run(pool)
    taskpool = SimpleNamespace(config=OmegaConf.create({"data_dir": str(tmp_path)}))
    family = NYUv2Family(pool, torch.device("cpu"), taskpool=taskpool)
    with pytest.raises(TintingConfigError, match=rf"No NYUv2 validation images in {tmp_path}/nyuv2/val/image"):
        family.validate_task("depth")
