"""Speed of the test-time adaptation loops: FusionBench's layer-wise AdaMerging and our methods, measured
in one process on one speed suite (:mod:`..testing.speed_suite`).

Per method one run of ``run()`` followed by the evaluation of every test set (the whole job). The
time of one iteration is the adaptation loop's own: ours from the trainer (all iterations), AdaMerging's
from its profiler sections (without its first iteration, which starts its data loaders). One iteration
adapts every task once: AdaMerging ``K x batch 16`` images (its reference setting), ours ``K x batch 32``;
the ratio is taken per adapted image. Shares of a step: AdaMerging's own profiler sections; ours from
``profile_steps`` (a second, shorter run synchronised around each part).
"""

from __future__ import annotations

import gc
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from omegaconf import OmegaConf

from ..testing.speed_suite import SpeedSuiteSpec, build_speed_suite

BASELINE = "adamerging"
METHODS = ("adamerging", "model_tinting", "model_tinting_plusplus")


@dataclass
class Timing:
    method: str
    iteration_ms: float
    images_per_iteration: int
    images_per_second: float
    ms_per_image: float
    job_s: float
    peak_memory_gib: Optional[float]
    shares: Dict[str, float] = field(default_factory=dict)
    ratio_vs_adamerging: Optional[float] = None  # AdaMerging's ms per image / this method's


def _fabric(accelerator: str, log_root: Path):
    """A one-device Fabric with a TensorBoard logger (FusionBench's AdaMerging logs its hyper-parameters)."""
    import lightning as L
    from lightning.fabric.loggers import TensorBoardLogger

    return L.Fabric(accelerator=accelerator, devices=1, loggers=TensorBoardLogger(root_dir=str(log_root), name="runs"))


def _pools(config_dir: Path, suite: str):
    """The suite's model pool (instantiated) and task pool config, composed by Hydra as the CLI does."""
    from hydra import compose, initialize_config_dir

    from fusion_bench.utils import instantiate
    from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

    import fusion_bench_tinting  # noqa: F401  (typing shim)

    overrides = [f"hydra.searchpath=[file://{config_dir}]", f"modelpool={suite}", f"taskpool={suite}"]
    with initialize_config_dir(config_dir=str(fusion_bench_config_dir()), version_base=None):
        config = compose("fabric_model_fusion", overrides=overrides)
    return instantiate(config.modelpool, _recursive_=False), config.taskpool


def _adamerging(steps: int, num_workers: int):
    from fusion_bench.compat.method import load_algorithm_from_config
    from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

    config = OmegaConf.load(fusion_bench_config_dir() / "method" / "adamerging" / "clip.yaml")
    config.merge_with({"max_steps": steps, "num_workers": num_workers, "save_merging_weights": False, "fast_dev_run": False})
    return load_algorithm_from_config(config)


def _ours(name: str, steps: int, num_workers: int, profile_steps: bool = False):
    from fusion_bench_tinting import ModelTintingAlgorithm, ModelTintingPlusPlus

    cls = ModelTintingPlusPlus if name == "model_tinting_plusplus" else ModelTintingAlgorithm
    return cls(max_steps=steps, num_workers=num_workers, reuse_cache=False, save_weights=False,
               profile_steps=profile_steps, log_every=max(steps, 1))


def _synchronize(accelerator: str) -> None:
    if accelerator == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_run(make_algorithm: Callable, config_dir: Path, suite: str, accelerator: str, evaluate: bool):
    """(seconds, algorithm, the model's report extras) of one fresh run, with the evaluation of every task
    when ``evaluate``."""
    from fusion_bench.utils import instantiate

    modelpool, taskpool_config = _pools(config_dir, suite)
    algorithm = make_algorithm()
    fabric = _fabric(accelerator, config_dir.parent / "logs")
    algorithm._fabric_instance = fabric
    _synchronize(accelerator)
    start = time.perf_counter()
    model = algorithm.run(modelpool)
    if evaluate:
        taskpool = instantiate(taskpool_config, _recursive_=False)
        taskpool._fabric_instance = fabric
        taskpool.evaluate(model)
    _synchronize(accelerator)
    seconds = time.perf_counter() - start
    extras = dict(getattr(model, "report_extras", {}))
    del model
    gc.collect()
    return seconds, algorithm, extras


def _fractions(seconds: Dict[str, float]) -> Dict[str, float]:
    total = sum(seconds.values())
    return {k: v / total for k, v in seconds.items()} if total else {}


ADAMERGING_SECTIONS = ("data loading", "forward pass", "backward pass", "optimizer step", "merging weights")


def _adamerging_loop_seconds(algorithm, steps: int, num_tasks: int) -> float:
    """AdaMerging's loop time from its own profiler, without its first iteration (data-loader start-up):
    generous to the baseline. Its per-step ``loss.item()`` synchronises, so the sections add up to the loop."""
    durations = algorithm.profiler.recorded_durations
    per_task = ("data loading", "forward pass", "backward pass")
    total = sum(sum(durations[k][num_tasks:]) for k in per_task) + sum(
        sum(durations[k][1:]) for k in ("optimizer step", "merging weights")
    )
    return total / (steps - 1)


def measure(
    method: str,
    config_dir: Path,
    suite: str,
    *,
    num_tasks: int,
    steps: int,
    accelerator: str,
    num_workers: int,
) -> Timing:
    """One run of ``method`` (loop time per iteration, whole job, peak memory) and, for ours, one short
    profiled run for the shares of a step."""
    if accelerator == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if method == BASELINE:
        job, algorithm, _ = _timed_run(lambda: _adamerging(steps, num_workers), config_dir, suite, accelerator, True)
        iteration = _adamerging_loop_seconds(algorithm, steps, num_tasks)
        images = num_tasks * 16
        durations = algorithm.profiler.recorded_durations
        shares = _fractions({k: sum(durations[k]) for k in ADAMERGING_SECTIONS if k in durations})
    else:
        job, _, extras = _timed_run(lambda: _ours(method, steps, num_workers), config_dir, suite, accelerator, True)
        iteration = extras["adaptation_time_s"] / steps
        images = num_tasks * 32
        _, profiled, _ = _timed_run(lambda: _ours(method, max(1, steps // 4), num_workers, profile_steps=True),
                                    config_dir, suite, accelerator, evaluate=False)
        durations = profiled.profiler.recorded_durations
        shares = _fractions({k[len("step: "):]: sum(v) for k, v in durations.items() if k.startswith("step: ")})
    peak = torch.cuda.max_memory_allocated() / 2**30 if accelerator == "cuda" else None
    return Timing(
        method=method,
        iteration_ms=1000 * iteration,
        images_per_iteration=images,
        images_per_second=images / iteration,
        ms_per_image=1000 * iteration / images,
        job_s=job,
        peak_memory_gib=peak,
        shares=shares,
    )


def device_name(accelerator: str) -> str:
    if accelerator == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_benchmark(
    spec: SpeedSuiteSpec,
    *,
    root: Path,
    methods: List[str] = list(METHODS),
    steps: int = 20,
    accelerator: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Build (or reuse) the suite under ``root`` and time each method; returns the results as a dict."""
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {list(METHODS)}")
    if steps < 2:
        raise ValueError("steps must be at least 2 (AdaMerging's first iteration is left out)")
    suite = build_speed_suite(root, spec)
    timings = [
        measure(m, root / "config", suite, num_tasks=spec.num_tasks, steps=steps, accelerator=accelerator,
                num_workers=num_workers)
        for m in methods
    ]
    baseline = next((t for t in timings if t.method == BASELINE), None)
    for timing in timings:
        if baseline is not None:
            timing.ratio_vs_adamerging = baseline.ms_per_image / timing.ms_per_image
    return {
        "date": date.today().isoformat(),
        "device": device_name(accelerator),
        "suite": asdict(spec),
        "steps": steps,
        "torch": torch.__version__,
        "timings": [asdict(t) for t in timings],
    }


def markdown(result: dict) -> str:
    spec = result["suite"]
    lines = [
        f"### {spec['architecture']}, {spec['num_tasks']} tasks, {result['device']}, {result['date']}",
        "",
        f"{result['steps']} iterations per measurement; {spec['images_per_task']} JPEGs of "
        f"{spec['image_width']}x{spec['image_height']} per task; torch {result['torch']}.",
        "",
        "| method | ms / iteration | images / iteration | images / s | ms / image | x AdaMerging (per image) | whole job (s) | peak GPU memory (GiB) | step shares |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in result["timings"]:
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in t["shares"].items())
        ratio = "" if t["ratio_vs_adamerging"] is None else f"{t['ratio_vs_adamerging']:.2f}"
        memory = "" if t["peak_memory_gib"] is None else f"{t['peak_memory_gib']:.2f}"
        lines.append(
            f"| {t['method']} | {t['iteration_ms']:.1f} | {t['images_per_iteration']} | {t['images_per_second']:.0f} | "
            f"{t['ms_per_image']:.3f} | {ratio} | {t['job_s']:.1f} | {memory} | {shares} |"
        )
    return "\n".join(lines) + "\n"


def save(result: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    spec = result["suite"]
    stem = f"{spec['architecture']}_TA{spec['num_tasks']}_{result['date']}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(markdown(result))
    return out / f"{stem}.md"
