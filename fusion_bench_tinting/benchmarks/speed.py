"""Speed of the test-time adaptation loops: FusionBench's layer-wise AdaMerging and our methods, measured
in one process on one speed suite (:mod:`..testing.speed_suite`).

Per method one run of ``run()`` followed by the evaluation of every test set (the whole job). The
time of one iteration is the adaptation loop's own, without its first iteration (AdaMerging's starts its
data loaders, a compiled step compiles there): AdaMerging's from its profiler sections, ours from the
trainer. The first iteration is reported on its own, and the whole job includes it. One iteration
adapts every task once: AdaMerging ``K x batch 16`` images (its reference setting), ours ``K x batch 32``;
the ratio is taken per adapted image. Shares of a step: AdaMerging's own profiler sections; ours from
``profile_steps`` (a second, shorter run synchronised around each part; eager methods only).
``*_compiled``: our methods with ``compile_step`` (``reduce-overhead`` on CUDA: inductor + CUDA graphs),
each compiled from cold caches, so the first iteration and the whole job hold a full compilation.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from omegaconf import OmegaConf

from ..testing.speed_suite import SpeedSuiteSpec, build_speed_suite

BASELINE = "adamerging"
METHODS = (
    "adamerging",
    "model_tinting",
    "model_tinting_plusplus",
    "model_tinting_compiled",
    "model_tinting_plusplus_compiled",
)
DEFAULT_METHODS = ("adamerging", "model_tinting", "model_tinting_plusplus")


@dataclass
class Timing:
    method: str
    iteration_ms: float
    images_per_iteration: int
    images_per_second: float
    ms_per_image: float
    job_s: float
    peak_memory_gib: Optional[float]
    first_iteration_s: Optional[float] = None  # start-up: AdaMerging's data loaders, a compiled step's compilation
    shares: Dict[str, float] = field(default_factory=dict)
    job_parts_s: Dict[str, float] = field(default_factory=dict)  # where the whole job's seconds went
    ratio_vs_adamerging: Optional[float] = None  # AdaMerging's ms per image / this method's


def _fabric(accelerator: str, log_root: Path, precision: str):
    """A one-device Fabric with a TensorBoard logger (FusionBench's AdaMerging logs its hyper-parameters)."""
    import lightning as L
    from lightning.fabric.loggers import TensorBoardLogger

    return L.Fabric(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        loggers=TensorBoardLogger(root_dir=str(log_root), name="runs"),
    )


def _pools(config_dir: Path, suite: str):
    """The suite's model pool (instantiated) and task pool config, composed by Hydra as the CLI does."""
    from fusion_bench.utils import instantiate
    from hydra import compose, initialize_config_dir

    import fusion_bench_tinting  # noqa: F401  (typing shim)
    from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

    overrides = [f"hydra.searchpath=[file://{config_dir}]", f"modelpool={suite}", f"taskpool={suite}"]
    with initialize_config_dir(config_dir=str(fusion_bench_config_dir()), version_base=None):
        config = compose("fabric_model_fusion", overrides=overrides)
    return instantiate(config.modelpool, _recursive_=False), config.taskpool


def _adamerging(steps: int, num_workers: int):
    from fusion_bench.compat.method import load_algorithm_from_config

    from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

    config = OmegaConf.load(fusion_bench_config_dir() / "method" / "adamerging" / "clip.yaml")
    config.merge_with(
        {"max_steps": steps, "num_workers": num_workers, "save_merging_weights": False, "fast_dev_run": False}
    )
    return load_algorithm_from_config(config)


def _ours(
    name: str,
    steps: int,
    num_workers: int,
    accelerator: str,
    profile_steps: bool = False,
    compile_backend: str = "inductor",
    options: Optional[Dict[str, Any]] = None,
):
    from fusion_bench_tinting import ModelTintingAlgorithm, ModelTintingPlusPlus

    cls = ModelTintingPlusPlus if name.startswith("model_tinting_plusplus") else ModelTintingAlgorithm
    compile_step = ("reduce-overhead" if accelerator == "cuda" else True) if _compiled(name) else False
    algorithm = cls(max_steps=steps, save_weights=False, compile_step=compile_step, **(options or {}))
    # how, not what, it computes: settings of the instance, not options
    algorithm.num_workers, algorithm.reuse_cache, algorithm.profile_steps = num_workers, False, profile_steps
    algorithm.log_every, algorithm.compile_backend = max(steps, 1), compile_backend
    return algorithm


def _compiled(name: str) -> bool:
    return name.endswith("_compiled")


@contextlib.contextmanager
def _cold_compile_caches():
    """Each measured method compiles from nothing, as a first run on a new machine would: dynamo's
    in-process cache is reset and inductor writes into a fresh, temporary cache folder."""
    import torch._dynamo

    torch._dynamo.reset()
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="inductor-") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            yield
        finally:
            torch._dynamo.reset()
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def _synchronize(accelerator: str) -> None:
    if accelerator == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_run(
    make_algorithm: Callable, config_dir: Path, suite: str, accelerator: str, precision: str, evaluate: bool
):
    """(seconds, of which evaluation, algorithm, the model's report extras) of one fresh run, with the
    evaluation of every task when ``evaluate``."""
    from fusion_bench.utils import instantiate

    modelpool, taskpool_config = _pools(config_dir, suite)
    algorithm = make_algorithm()
    fabric = _fabric(accelerator, config_dir.parent / "logs", precision)
    algorithm._fabric_instance = fabric
    _synchronize(accelerator)
    start = time.perf_counter()
    model = algorithm.run(modelpool)
    _synchronize(accelerator)
    evaluation_start = time.perf_counter()
    if evaluate:
        taskpool = instantiate(taskpool_config, _recursive_=False)
        taskpool._fabric_instance = fabric
        taskpool.evaluate(model)
    _synchronize(accelerator)
    end = time.perf_counter()
    extras = dict(getattr(model, "report_extras", {}))
    del model
    gc.collect()
    return end - start, end - evaluation_start, algorithm, extras


#: our profiler's sections of a run, as parts of the whole job
JOB_SECTIONS = ("load pretrained", "load fine-tuned", "preprocess inputs", "teacher outputs", "adaptation")


def _job_parts(job: float, evaluation: float, durations: Optional[Dict[str, List[float]]] = None) -> Dict[str, float]:
    """Seconds of the whole job by part: our profiler's sections (when given), the evaluation, the rest."""
    parts = {k: sum(durations[k]) for k in JOB_SECTIONS if durations and k in durations}
    parts["evaluation"] = evaluation
    parts["other"] = max(0.0, job - sum(parts.values()))
    return parts


def _fractions(seconds: Dict[str, float]) -> Dict[str, float]:
    total = sum(seconds.values())
    return {k: v / total for k, v in seconds.items()} if total else {}


ADAMERGING_SECTIONS = ("data loading", "forward pass", "backward pass", "optimizer step", "merging weights")


def _adamerging_loop_seconds(algorithm, steps: int, num_tasks: int) -> Tuple[float, float]:
    """AdaMerging's (first iteration, mean of the others) from its own profiler; the first starts its data
    loaders. Its per-step ``loss.item()`` synchronises, so the sections add up to the loop."""
    durations = algorithm.profiler.recorded_durations
    per_task = ("data loading", "forward pass", "backward pass")
    first = sum(sum(durations[k][:num_tasks]) for k in per_task) + sum(
        durations[k][0] for k in ("optimizer step", "merging weights")
    )
    total = sum(sum(durations[k]) for k in (*per_task, "optimizer step", "merging weights"))
    return first, (total - first) / (steps - 1)


def measure(
    method: str,
    config_dir: Path,
    suite: str,
    *,
    num_tasks: int,
    steps: int,
    accelerator: str,
    num_workers: int,
    precision: str = "32-true",
    compile_backend: str = "inductor",
    options: Optional[Dict[str, Any]] = None,
) -> Timing:
    """One run of ``method`` (loop time per iteration, whole job, peak memory) and, for our eager methods,
    one short profiled run for the shares of a step."""
    if accelerator == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = lambda make, evaluate=True: _timed_run(make, config_dir, suite, accelerator, precision, evaluate)  # noqa: E731
    shares: Dict[str, float] = {}
    if method == BASELINE:
        job, evaluation, algorithm, _ = run(lambda: _adamerging(steps, num_workers))
        job_parts = _job_parts(job, evaluation)
        first, iteration = _adamerging_loop_seconds(algorithm, steps, num_tasks)
        images = num_tasks * 16
        durations = algorithm.profiler.recorded_durations
        shares = _fractions({k: sum(durations[k]) for k in ADAMERGING_SECTIONS if k in durations})
    else:
        with _cold_compile_caches():
            job, evaluation, algorithm, extras = run(
                lambda: _ours(method, steps, num_workers, accelerator, compile_backend=compile_backend, options=options)
            )
        job_parts = _job_parts(job, evaluation, algorithm.profiler.recorded_durations)
        first = extras["first_iteration_s"]
        iteration = (extras["adaptation_time_s"] - first) / (steps - 1)
        images = num_tasks * 32
        if not _compiled(method):
            _, _, profiled, _ = run(
                lambda: _ours(method, max(1, steps // 4), num_workers, accelerator, True, options=options), False
            )
            durations = profiled.profiler.recorded_durations
            shares = _fractions({k[len("step: ") :]: sum(v) for k, v in durations.items() if k.startswith("step: ")})
    peak = torch.cuda.max_memory_allocated() / 2**30 if accelerator == "cuda" else None
    return Timing(
        method=method,
        iteration_ms=1000 * iteration,
        images_per_iteration=images,
        images_per_second=images / iteration,
        ms_per_image=1000 * iteration / images,
        job_s=job,
        peak_memory_gib=peak,
        first_iteration_s=first,
        shares=shares,
        job_parts_s=job_parts,
    )


def device_name(accelerator: str) -> str:
    if accelerator == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_benchmark(
    spec: SpeedSuiteSpec,
    *,
    root: Path,
    methods: List[str] = list(DEFAULT_METHODS),
    steps: int = 20,
    accelerator: str = "auto",
    num_workers: int = 0,
    precision: str = "32-true",
    compile_backend: str = "inductor",
    options: Optional[Dict[str, Any]] = None,
) -> dict:
    """``options``: extra constructor arguments of our methods (e.g. ``task_vector_dtype``)."""
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
        measure(
            m,
            root / "config",
            suite,
            num_tasks=spec.num_tasks,
            steps=steps,
            accelerator=accelerator,
            num_workers=num_workers,
            precision=precision,
            compile_backend=compile_backend,
            options=options,
        )
        for m in methods
    ]
    baseline = next((t for t in timings if t.method == BASELINE), None)
    for timing in timings:
        if baseline is not None:
            timing.ratio_vs_adamerging = baseline.ms_per_image / timing.ms_per_image
    return {
        "date": date.today().isoformat(),
        "device": device_name(accelerator),
        "accelerator": accelerator,
        "suite": asdict(spec),
        "steps": steps,
        "precision": precision,
        "compile_backend": compile_backend,
        "options": dict(options or {}),
        "torch": torch.__version__,
        "timings": [asdict(t) for t in timings],
    }


def _images_text(spec: dict) -> str:
    size = f"JPEGs of {spec['image_width']}x{spec['image_height']}"
    if spec["images_per_task"] != "real":
        return f"{spec['images_per_task']} {size} per task"
    return f"{size}, as many as the real test sets ({SpeedSuiteSpec(**spec).total_images} in all)"


def markdown(result: dict) -> str:
    spec = result["suite"]
    lines = [
        f"### {spec['architecture']}, {spec['num_tasks']} tasks, {result['device']}, {result['date']}",
        "",
        f"{result['steps']} iterations per measurement (per-iteration figures without the first); "
        f"{_images_text(spec)}; "
        f"precision {result.get('precision', '32-true')}; torch {result['torch']}"
        + "".join(f"; {k}={v}" for k, v in result.get("options", {}).items())
        + ".",
        "",
        "| method | ms / iteration | images / iteration | images / s | ms / image | x AdaMerging (per image) "
        "| first iteration (s) | whole job (s) | peak GPU memory (GiB) | step shares | whole job's parts (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for t in result["timings"]:
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in t["shares"].items())
        ratio = "" if t["ratio_vs_adamerging"] is None else f"{t['ratio_vs_adamerging']:.2f}"
        memory = "" if t["peak_memory_gib"] is None else f"{t['peak_memory_gib']:.2f}"
        first = "" if t.get("first_iteration_s") is None else f"{t['first_iteration_s']:.2f}"
        parts = ", ".join(f"{k} {v:.1f}" for k, v in t.get("job_parts_s", {}).items())
        lines.append(
            f"| {t['method']} | {t['iteration_ms']:.1f} | {t['images_per_iteration']} | {t['images_per_second']:.0f} | "
            f"{t['ms_per_image']:.3f} | {ratio} | {first} | {t['job_s']:.1f} | {memory} | {shares} | {parts} |"
        )
    return "\n".join(lines) + "\n"


def save(result: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    spec = result["suite"]
    precision = result.get("precision", "32-true")
    parts = [f"{spec['architecture']}_TA{spec['num_tasks']}", result["date"], result.get("accelerator", "")]
    parts += [] if precision == "32-true" else [precision.split("-")[0]]
    parts += [f"{key}-{value}" for key, value in result.get("options", {}).items()]
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(p for p in parts if p))
    taken, number = stem, 1
    while (out / f"{taken}.md").exists() or (out / f"{taken}.json").exists():  # never overwrite a result
        number += 1
        taken = f"{stem}_{number}"
    (out / f"{taken}.json").write_text(json.dumps(result, indent=2))
    (out / f"{taken}.md").write_text(markdown(result))
    return out / f"{taken}.md"
