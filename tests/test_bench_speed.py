"""The speed benchmark runs end to end on the CPU with a tiny architecture (no timing asserted: what is
checked is that every method is measured against AdaMerging in one run and the results are written)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_speed_measures_every_method_against_adamerging(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "bench_speed.py"),
        "--arch",
        "tiny",
        "--tasks",
        "2",
        "--images",
        "16",
        "--steps",
        "3",
        "--accelerator",
        "cpu",
        "--root",
        str(tmp_path / "suite"),
        "--out",
        str(tmp_path / "out"),
        "--methods",
        "adamerging,model_tinting,model_tinting_plusplus,model_tinting_compiled",
        "--compile-backend",
        "aot_eager",
    ]  # traced, not code-generated: the compiled branch without its compile time
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (table,) = (tmp_path / "out").glob("tiny_TA2_*.md")
    (raw,) = (tmp_path / "out").glob("tiny_TA2_*.json")
    figures = json.loads(raw.read_text())
    timings = {t["method"]: t for t in figures["timings"]}
    assert list(timings) == ["adamerging", "model_tinting", "model_tinting_plusplus", "model_tinting_compiled"]
    assert timings["adamerging"]["ratio_vs_adamerging"] == 1.0
    for name, t in timings.items():
        assert t["iteration_ms"] > 0 and t["job_s"] > 0 and t["first_iteration_s"] > 0
        assert t["job_s"] > t["first_iteration_s"] + 2 * t["iteration_ms"] / 1000  # the job holds every iteration
        assert abs(t["ms_per_image"] * t["images_per_iteration"] - t["iteration_ms"]) < 1e-6 * t["iteration_ms"]
        assert sum(t["job_parts_s"].values()) == pytest.approx(t["job_s"], rel=1e-6)  # the parts make the job
        assert t["job_parts_s"]["evaluation"] > 0
        if name != "model_tinting_compiled":  # the compiled step has no parts to time apart
            assert sum(t["shares"].values()) == pytest.approx(1.0)
    assert timings["model_tinting"]["images_per_iteration"] == 2 * 32
    assert set(timings["model_tinting"]["shares"]) == {"merge", "data", "forward", "backward", "optimizer"}
    assert {"preprocess inputs", "teacher outputs", "adaptation"} <= set(timings["model_tinting"]["job_parts_s"])
    assert figures["suite"]["architecture"] == "tiny" and "CPU" in figures["device"]
    assert table.read_text().count("\n| ") == 5  # header + 4 methods
    assert figures["precision"] == "32-true" and table.name.endswith("_cpu.md")
    assert "| model_tinting |" in result.stdout


def test_speed_suite_sizes():
    from fusion_bench_tinting.testing.speed_suite import TA20, TEST_SET_SIZES, SpeedSuiteSpec

    assert set(TEST_SET_SIZES) == set(TA20)
    real = SpeedSuiteSpec(architecture="ViT-B-32", num_tasks=8, images_per_task="real")
    assert real.test_size("svhn") == 26032 and real.total_images == sum(TEST_SET_SIZES[t] for t in TA20[:8])
    assert SpeedSuiteSpec(num_tasks=3, images_per_task=10).total_images == 30
    for bad in ("lots", 0, -5):
        with pytest.raises(ValueError, match="images_per_task"):
            SpeedSuiteSpec(images_per_task=bad)


def test_saved_results_are_named_by_their_settings_and_never_overwritten(tmp_path):
    from fusion_bench_tinting.benchmarks.speed import save

    result = {
        "date": "2026-11-23",
        "accelerator": "cuda",
        "precision": "bf16-mixed",
        "steps": 3,
        "torch": "x",
        "device": "GPU",
        "options": {"input_dtype": "uint8"},
        "timings": [],
        "suite": {
            "architecture": "ViT-B-32",
            "num_tasks": 8,
            "images_per_task": 4,
            "image_width": 3,
            "image_height": 2,
        },
    }
    first, second = save(result, tmp_path), save(result, tmp_path)
    assert first.name == "ViT-B-32_TA8_2026-11-23_cuda_bf16_input_dtype-uint8.md"
    assert second.name == "ViT-B-32_TA8_2026-11-23_cuda_bf16_input_dtype-uint8_2.md"
    assert len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_bench_preprocess_compares_both_ways_on_the_same_cached_tensors(tmp_path, dtype):
    """Both ways must cache identical tensors (the script refuses otherwise) and both are reported."""
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "bench_preprocess.py"),
        "--images",
        "12",
        "--workers",
        "1",
        "--batch-size",
        "5",
        "--dtype",
        dtype,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline: convert in the main process" in result.stdout and "ours: convert in the workers" in result.stdout
    assert "main-process CPU per image, baseline / ours:" in result.stdout
