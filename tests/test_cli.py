"""End to end through the ``fusion_bench`` CLI on the tiny suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, run_cli_subprocess, task_accuracies

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = {"eurosat", "stl10", "fashion_mnist", "cifar10"}


def _check_tinting_report(report, method):
    assert set(task_accuracies(report)) == TASKS
    assert report["average"]["accuracy"] == pytest.approx(sum(task_accuracies(report).values()) / 4)
    extras = report["adaptation"]
    assert extras["method"] == method
    for key in ("adaptation_time_s", "optimizer_steps", "coefficients_below_1e-5"):
        assert key in extras
    if method == "model_tinting_plusplus":
        assert set(extras["filter_dropped_fraction"]) == TASKS


@pytest.mark.slow
def test_model_tinting_subprocess_from_the_repository_root(tiny_suites, tmp_path, monkeypatch):
    """The exact user command, run from this repository's root (which has a ./config folder that
    FusionBench's CLI would otherwise take as its primary config folder)."""
    monkeypatch.chdir(REPO_ROOT)
    log_dir = tmp_path / "log"
    result = run_cli_subprocess(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=model_tinting",
            "modelpool=tiny-clip_TA4",
            "method.max_steps=10",
        ],
        log_dir,
    )
    report = json.loads((log_dir / "program_report.json").read_text())
    _check_tinting_report(report, "model_tinting")
    assert (log_dir / "model_tinting.safetensors").exists()
    assert (log_dir / "model_tinting_config.yaml").exists()
    assert "accuracy per task (%)" in result.stdout  # the printed table
    assert "Model Tinting adaptation" in result.stderr  # the progress bar
    # which task pool evaluates the run is said at start-up, before the first model is loaded
    output = result.stdout + result.stderr
    announced = output.find(
        "Task pool evaluating this run: fusion_bench_tinting.evaluation.taskpool.TaskAwareCLIPVisionModelTaskPool"
    )
    assert 0 <= announced < output.find("Task vectors and teacher outputs")


@pytest.mark.slow
def test_model_tinting_plusplus_subprocess_on_open_clip(tiny_suites, tmp_path):
    """OpenCLIP pools (the task_vectors checkpoint format) through FusionBench's own
    OpenCLIPVisionModelPool: needs the Python 3.11 typing shim and the pickle loader."""
    log_dir = tmp_path / "log"
    run_cli_subprocess(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=model_tinting_plusplus",
            "modelpool=tiny-openclip_TA4",
            "method.max_steps=10",
        ],
        log_dir,
    )
    _check_tinting_report(json.loads((log_dir / "program_report.json").read_text()), "model_tinting_plusplus")


def test_plusplus_on_hf_clip_and_tinting_on_open_clip_in_process(tiny_suites, tmp_path):
    config = ["--config-dir", str(tiny_suites / "config")]
    report = run_cli(
        [*config, "method=model_tinting_plusplus", "modelpool=tiny-clip_TA4", "method.max_steps=5"], tmp_path / "a"
    )
    _check_tinting_report(report, "model_tinting_plusplus")
    report = run_cli(
        [*config, "method=model_tinting", "modelpool=tiny-openclip_TA4", "method.max_steps=5"], tmp_path / "b"
    )
    _check_tinting_report(report, "model_tinting")


@pytest.mark.parametrize(
    "suite, stock",
    [
        ("tiny-clip_TA4", "fusion_bench.taskpool.CLIPVisionModelTaskPool"),
        ("tiny-openclip_TA4", "fusion_bench.taskpool.OpenCLIPVisionModelTaskPool"),
    ],
)
def test_stock_task_pool_is_upgraded_to_the_task_aware_one(tiny_suites, tmp_path, suite, stock):
    """With FusionBench's own task pool selected, each task still uses its tinted head: the numbers
    equal those of the task-aware pool (same seed, CPU)."""
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        f"modelpool={suite}",
        "method.max_steps=5",
    ]
    aware = run_cli([*config, f"taskpool={suite}"], tmp_path / "aware")
    stock_report = run_cli([*config, f"taskpool={suite}", f"taskpool._target_={stock}"], tmp_path / "stock")
    assert task_accuracies(stock_report) == task_accuracies(aware)
    assert "adaptation" in stock_report


@pytest.mark.parametrize("method", ["model_tinting", "task_arithmetic"])
def test_plus_suite_evaluates_ours_and_fusion_bench_baselines_per_task(tiny_suites, tmp_path, method):
    report = run_cli(
        ["--config-dir", str(tiny_suites / "config"), f"method={method}", "+suite=tiny-clip_TA4", "method.max_steps=1"]
        if method == "model_tinting"
        else ["--config-dir", str(tiny_suites / "config"), f"method={method}", "+suite=tiny-clip_TA4"],
        tmp_path / "log",
    )
    assert set(task_accuracies(report)) == TASKS


def test_a_program_without_the_expected_shape_is_refused_with_what_to_pass():
    from types import SimpleNamespace

    from fusion_bench_tinting.core.errors import TintingConfigError
    from fusion_bench_tinting.suites import ensure_task_aware_taskpool

    with pytest.raises(TintingConfigError, match=r"has no _taskpool, _instantiate_and_setup: .*\(taskpool=<suite>\)"):
        ensure_task_aware_taskpool(SimpleNamespace(taskpool=None))


def test_explicit_dummy_task_pool_is_respected(tiny_suites, tmp_path):
    report = run_cli(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=model_tinting",
            "modelpool=tiny-clip_TA4",
            "method.max_steps=1",
            "taskpool=dummy",
        ],
        tmp_path / "log",
    )
    assert "average" not in report and "model_info" in report


def test_emr_merging_is_evaluated_per_task_by_the_task_aware_pool(tiny_suites, tmp_path):
    config = ["--config-dir", str(tiny_suites / "config"), "modelpool=tiny-clip_TA4", "taskpool=tiny-clip_TA4"]
    emr = run_cli([*config, "method=emr_merging/emr_merging"], tmp_path / "emr")
    task_arithmetic = run_cli([*config, "method=task_arithmetic"], tmp_path / "ta")
    assert set(task_accuracies(emr)) == TASKS
    # EMR's per-task masks and rescalers only act once `set_task` is called for each task
    assert emr["average"]["accuracy"] > task_arithmetic["average"]["accuracy"]


def test_merged_model_is_saved_with_save_pretrained(tiny_suites, tmp_path):
    run_cli(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=model_tinting",
            "modelpool=tiny-clip_TA4",
            "method.max_steps=1",
            f"merged_model_save_path={tmp_path / 'merged'}",
        ],
        tmp_path / "log",
    )
    assert (tmp_path / "merged" / "config.json").exists()
    assert (tmp_path / "merged" / "tinted_layers.safetensors").exists()


def test_weights_option_skips_adaptation_and_reproduces_the_report(tiny_suites, tmp_path):
    config = ["--config-dir", str(tiny_suites / "config"), "method=model_tinting", "modelpool=tiny-clip_TA4"]
    first = run_cli([*config, "method.max_steps=5"], tmp_path / "first")
    second = run_cli([*config, f"method.weights={tmp_path / 'first'}"], tmp_path / "second")
    assert task_accuracies(first) == task_accuracies(second)
    assert "weights_loaded_from" in second["adaptation"]


@pytest.mark.slow
def test_unknown_suite_name_is_a_clear_error(tmp_path):
    result = run_cli_subprocess(
        ["method=model_tinting", "modelpool=clip-vit-base-patch32_TA9"], tmp_path / "log", check=False
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Could not find 'modelpool/clip-vit-base-patch32_TA9'" in output
    assert "clip-vit-base-patch32_TA8" in output  # the available suites are listed


def test_a_config_error_is_one_line_without_traceback_from_the_command(tiny_suites, tmp_path):
    """The method is constructed before any model is loaded; its error is the output's last line, status 2;
    FUSION_BENCH_TINTING_TRACEBACK=1 keeps the traceback for whoever wants it."""
    args = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "method.lr=0",
    ]
    result = run_cli_subprocess(args, tmp_path / "plain", check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2
    assert output.splitlines()[-1] == "Configuration error: method.lr=0: 'auto' or a number > 0."
    assert "Traceback" not in output
    full = run_cli_subprocess(args, tmp_path / "full", check=False, env={"FUSION_BENCH_TINTING_TRACEBACK": "1"})
    assert full.returncode != 0 and "Traceback" in full.stdout + full.stderr


@pytest.mark.parametrize(
    "method, option, closest",
    [
        ("model_tinting", "max_step", "max_steps"),
        ("model_tinting_plusplus", "confidence_filtr", "confidence_filter"),
        ("lot_merging", "num_sample", "num_samples"),
    ],
)
def test_an_unknown_option_stops_before_any_model_is_loaded_naming_the_closest(
    tiny_suites, tmp_path, method, option, closest
):
    """Hydra suggests `+method.x=...` for an option the config lacks; that spelling must not start a default run."""
    args = [
        "--config-dir",
        str(tiny_suites / "config"),
        f"method={method}",
        "modelpool=tiny-clip_TA4",
        f"+method.{option}=20",
    ]
    result = run_cli_subprocess(args, tmp_path / "log", check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output[-2000:]
    assert output.splitlines()[-1].startswith(
        f"Configuration error: method.{option}: no such option; did you mean method.{closest}?"
    )
    assert "Task vectors and teacher outputs" not in output and not (tmp_path / "log" / "program_report.json").exists()
