"""Shared fixtures: offline settings, a temp folder per test, the tiny suites built once per session,
and helpers to run the real ``fusion_bench`` CLI in-process or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Files with slow tests first: ``--dist loadfile`` hands whole files to the two workers in this order,
    so the long ones start early instead of leaving one worker idle at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: files stay whole, tests in order


@pytest.fixture(autouse=True)
def _own_temp_folder(tmp_path, monkeypatch):
    """Each test runs in its own folder (FusionBench writes ./outputs) with its own cache folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSION_BENCH_CACHE_DIR", str(tmp_path / "cache"))
    yield


def shared_build(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test session, also across pytest-xdist workers: they share the session's
    base folder, and a lock makes a worker that needs a suite another one is building wait for it (a suite
    takes up to a minute to build; the fixtures that use this hand it out read-only)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this session's folder, above the workers' own
    root, done = base / name, base / f"{name}.built"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            root.mkdir(exist_ok=True)
            build(root)
            done.touch()
    return root


@pytest.fixture(scope="session")
def tiny_suites(tmp_path_factory) -> Path:
    """Folder with the tiny HF CLIP and OpenCLIP suites (models really fine-tuned), read-only for tests."""
    from fusion_bench_tinting.testing.tiny_suites import build_tiny_suites

    return shared_build(tmp_path_factory, "tiny_suites", build_tiny_suites)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    """Folder with the tiny RoBERTa and GPT-2 GLUE-style suites (models really fine-tuned), read-only for tests."""
    from fusion_bench_tinting.testing.tiny_text import build_tiny_text_suites

    return shared_build(tmp_path_factory, "tiny_text", build_tiny_text_suites)


def load_pool(tiny_suites: Path, suite: str):
    from fusion_bench.utils import instantiate
    from omegaconf import OmegaConf

    import fusion_bench_tinting  # noqa: F401  (typing shim before the OpenCLIP pool import)

    config = OmegaConf.load(tiny_suites / "config" / "modelpool" / f"{suite}.yaml")
    return instantiate(config, _recursive_=False)


def cpu_fabric():
    import lightning as L

    return L.Fabric(accelerator="cpu", devices=1)


def build_tinting(cls=None, **settings):
    """A tinting method from its options plus the settings that are not options (class attributes such as
    ``reuse_cache`` or ``keep_checkpoints``, set on the instance)."""
    from fusion_bench_tinting import ModelTintingAlgorithm

    cls = cls or ModelTintingAlgorithm
    options = {k: v for k, v in settings.items() if k in cls.OPTIONS.names}
    algorithm = cls(**options)
    for name, value in settings.items():
        if name not in options:
            assert hasattr(cls, name), f"{name} is neither an option nor a setting of {cls.__name__}"
            setattr(algorithm, name, value)
    return algorithm


def run_cli(args: List[str], log_dir: Path, accelerator: str = "cpu") -> Dict:
    """Run ``fusion_bench`` in-process (about 3x cheaper than a subprocess) and return its report."""
    from fusion_bench.scripts import cli
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    argv = sys.argv
    sys.argv = [
        "fusion_bench",
        *args,
        f"fabric.accelerator={accelerator}",
        "print_config=false",
        f"path.log_dir={log_dir}",
    ]
    try:
        cli._hydra_main()
    except SystemExit as error:  # Hydra reports errors and exits
        raise AssertionError(f"fusion_bench exited with {error.code}: {args}") from error
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return json.loads((log_dir / "program_report.json").read_text())


def run_cli_subprocess(
    args: List[str], log_dir: Path, check: bool = True, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """Run the installed ``fusion_bench`` console script exactly as a user would (``env``: extra variables)."""
    command = ["fusion_bench", *args, "fabric.accelerator=cpu", "print_config=false", f"path.log_dir={log_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def task_accuracies(report: Dict) -> Dict[str, float]:
    return {k: v["accuracy"] for k, v in report.items() if isinstance(v, dict) and "accuracy" in v and k != "average"}


@pytest.fixture(scope="session")
def tiny_hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache (``HF_HOME``) with tiny stand-ins under the real ids of FusionBench's ViT-B/32
    8/14/20-task suites: models and datasets, read-only for tests."""
    from fusion_bench_tinting.testing.hub_cache import fill_hub_cache

    return shared_build(tmp_path_factory, "hf_home", fill_hub_cache)


@pytest.fixture(scope="session")
def tiny_image_suites(tmp_path_factory) -> Path:
    """Folder with the tiny ConvNeXt, DINOv2 and ResNet image-classifier suites (models really fine-tuned)."""
    from fusion_bench_tinting.testing.tiny_image_classifiers import build_tiny_image_suites

    return shared_build(tmp_path_factory, "tiny_image_suites", build_tiny_image_suites)


@pytest.fixture(scope="session")
def tiny_torchvision_suite(tmp_path_factory) -> Path:
    """Folder with the torchvision ResNet-18 suite (``TorchvisionResNetPool``), few fine-tuning steps: the
    model is not tiny."""
    from fusion_bench_tinting.testing.tiny_image_classifiers import TinyImageSuiteSpec, build_tiny_image_suites

    root = tmp_path_factory.mktemp("tiny_torchvision_suite")
    build_tiny_image_suites(
        root, TinyImageSuiteSpec(architectures=("torchvision",), train_size=160, test_size=64, finetune_steps=20)
    )
    return root
