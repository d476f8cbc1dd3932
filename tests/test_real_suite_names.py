"""The user's command with FusionBench's real suite names, exactly as typed, against a local Hugging Face
cache holding tiny models and datasets under the real ids (testing.hub_cache)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

TA8 = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
TA20 = TA8 + [
    "oxford_flowers102",
    "pcam",
    "fer2013",
    "oxford-iiit-pet",
    "stl10",
    "cifar100",
    "cifar10",
    "food101",
    "fashion_mnist",
    "emnist_letters",
    "kmnist",
    "rendered-sst2",
]


def run_as_typed(command: str, hf_home: Path, cwd: Path) -> dict:
    """Run ``command`` from ``cwd`` with only the cache and offline mode set; return its program report."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command.split(), cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    (report,) = (cwd / "outputs").rglob("program_report.json")
    return json.loads(report.read_text())


def per_task_accuracy(report: dict) -> dict:
    return {k: v["accuracy"] for k, v in report.items() if isinstance(v, dict) and "accuracy" in v and k != "average"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, tasks",
    [
        ("fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8 method.max_steps=2", TA8),
        # Model Tinting++ on the 20-task suite: both spellings as typed, in one run (CI time)
        ("fusion_bench method=model_tinting_plusplus modelpool=clip-vit-base-patch32_TA20 method.max_steps=1", TA20),
    ],
)
def test_the_command_runs_as_typed_and_reports_every_task(command, tasks, tiny_hub_cache, tmp_path):
    report = run_as_typed(command, tiny_hub_cache, tmp_path)
    assert list(per_task_accuracy(report)) == tasks
    assert report["adaptation"]["iterations"] == int(command.rsplit("=", 1)[1])
    assert report["adaptation"]["method"] == command.split()[1].split("=")[1]


def test_the_cache_holds_the_ids_fusion_bench_configs_name(tiny_hub_cache):
    """Every model and dataset id of the 20-task suite is in the cache, read back offline by the libraries."""
    from fusion_bench_tinting.testing.hub_cache import dataset_location, dataset_spec, suite_models

    models = suite_models("clip-vit-base-patch32_TALL20")
    assert models["_pretrained_"] == "openai/clip-vit-base-patch32" and len(models) == 21
    for repo_id in models.values():
        assert (tiny_hub_cache / "hub" / f"models--{repo_id.replace('/', '--')}" / "refs" / "main").exists()
    script = (
        "import sys\nfrom fusion_bench.utils import instantiate\nfrom omegaconf import OmegaConf\n"
        "for spec in sys.argv[1:]:\n"
        "    d = instantiate(OmegaConf.create(spec))\n"
        "    print(len(d), sorted(d.column_names), flush=True)\n"
    )
    specs = [json.dumps(dataset_spec(task, "test")) for task in ("svhn", "fer2013", "pcam", "food101")]
    env = {**os.environ, "HF_HOME": str(tiny_hub_cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["python", "-c", script, *specs], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    sizes_and_columns = [line for line in result.stdout.splitlines() if line[:1].isdigit()]
    assert sizes_and_columns == ["16 ['image', 'label']"] * 4
    assert dataset_location(dataset_spec("svhn", "test"))[:3] == ("svhn", "cropped_digits", "test")
    assert dataset_location(dataset_spec("food101", "test"))[2] == "validation"
