"""Behaviour on a suite whose fine-tuned models are really trained: Model Tinting must recover most
of what task arithmetic loses. FusionBench's own Task Arithmetic is the baseline, run the same way."""

import pytest
import torch
from conftest import run_cli


@pytest.mark.slow
def test_model_tinting_beats_task_arithmetic_by_a_clear_margin(tiny_suites, tmp_path):
    config = ["--config-dir", str(tiny_suites / "config"), "modelpool=tiny-clip_TA4", "taskpool=tiny-clip_TA4"]
    task_arithmetic = run_cli([*config, "method=task_arithmetic"], tmp_path / "ta")["average"]["accuracy"]
    tinting = run_cli([*config, "method=model_tinting", "method.max_steps=120"], tmp_path / "mt")["average"]["accuracy"]
    plusplus = run_cli([*config, "method=model_tinting_plusplus", "method.max_steps=120"], tmp_path / "mtpp")
    assert tinting >= task_arithmetic + 0.2, (tinting, task_arithmetic)
    assert plusplus["average"]["accuracy"] >= task_arithmetic + 0.2, (plusplus["average"], task_arithmetic)
    assert any(v > 0 for v in plusplus["adaptation"]["filter_dropped_fraction"].values())
    # bf16 autocast with bf16-stored task vectors reaches the fp32 run's accuracy
    half = run_cli(
        [
            *config,
            "method=model_tinting",
            "method.max_steps=120",
            "fabric.precision=bf16-mixed",
            "method.task_vector_dtype=bfloat16",
        ],
        tmp_path / "bf16",
    )["average"]["accuracy"]
    assert abs(half - tinting) <= 0.03, (half, tinting)


@pytest.mark.slow
def test_model_tinting_improves_on_its_open_clip_starting_point(tiny_suites, tmp_path):
    """FusionBench 0.2.33 cannot load the OpenCLIP pickles itself on torch >= 2.6, so the baseline here is
    our own run with no adaptation step: task arithmetic with the initial coefficient 0.3."""
    config = ["--config-dir", str(tiny_suites / "config"), "modelpool=tiny-openclip_TA4", "method=model_tinting"]
    start = run_cli([*config, "method.max_steps=0"], tmp_path / "start")["average"]["accuracy"]
    tinted = run_cli([*config, "method.max_steps=120"], tmp_path / "mt")["average"]["accuracy"]
    assert tinted >= start + 0.2, (tinted, start)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fast_configuration_on_cuda_reaches_the_fp32_eager_accuracy(tiny_suites, tmp_path):
    """Everything the fast loop turns on (CUDA graphs, bf16 autocast and task vectors, uint8 inputs on the
    device, fused Adam) against the plain fp32 eager run on the GPU."""
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "modelpool=tiny-clip_TA4",
        "taskpool=tiny-clip_TA4",
        "method=model_tinting",
        "method.max_steps=200",
    ]
    plain = run_cli(config, tmp_path / "fp32", accelerator="cuda")["average"]["accuracy"]
    fast = run_cli(
        [
            *config,
            "method.compile_step=reduce-overhead",
            "fabric.precision=bf16-mixed",
            "method.task_vector_dtype=bfloat16",
            "method.input_dtype=uint8",
        ],
        tmp_path / "fast",
        accelerator="cuda",
    )
    assert fast["adaptation"]["compile_step"] == "reduce-overhead"
    assert abs(fast["average"]["accuracy"] - plain) <= 0.03, (fast["average"], plain)
