"""Coefficient trajectories of tinting runs, read back from their TensorBoard events.

The adaptation logs, per task, the mean of its (clamped) merging coefficients and the mean norm of the
coefficient gradient its steps produce (``coefficients/mean/<task>``, ``coefficients/grad_norm/<task>``).
Plotted side by side for a few runs, they show whether the coefficients move and how much signal reaches
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

Series = Dict[str, List[Tuple[int, float]]]


def read_scalars(log_dir: Path, prefix: str = "coefficients/") -> Series:
    """Every scalar whose tag starts with ``prefix`` in the TensorBoard events under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: Series = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            if tag.startswith(prefix):
                series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


def plot_trajectories(runs: Mapping[str, Series], path: Path, title: str = "") -> None:
    """Two panels: each task's mean coefficient, and its coefficient-gradient norm, over iterations; one line
    style per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (means, norms) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["-", "--", ":", "-."]
    tasks = sorted({tag.rsplit("/", 1)[-1] for series in runs.values() for tag in series if tag.count("/") == 2})
    colours = {task: f"C{index}" for index, task in enumerate(tasks)}
    for index, (run, series) in enumerate(runs.items()):
        style = styles[index % len(styles)]
        for task in tasks:
            for axes, kind in ((means, "mean"), (norms, "grad_norm")):
                points = series.get(f"coefficients/{kind}/{task}", [])
                if points:
                    steps, values = zip(*points)
                    axes.plot(steps, values, style, color=colours[task], label=f"{task} ({run})", linewidth=1.2)
    means.set_title("mean coefficient per task")
    norms.set_title("coefficient-gradient norm per task step")
    norms.set_yscale("log")
    for axes in (means, norms):
        axes.set_xlabel("iteration")
    means.legend(fontsize=7, loc="best")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def summarise(series: Series, tasks: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per task: first and last mean coefficient, and the mean gradient norm over the run."""
    summary = {}
    for task in tasks:
        means = series.get(f"coefficients/mean/{task}", [])
        norms = [v for _, v in series.get(f"coefficients/grad_norm/{task}", [])]
        if means:
            summary[task] = {
                "first_mean": means[0][1],
                "last_mean": means[-1][1],
                "mean_grad_norm": sum(norms) / len(norms) if norms else float("nan"),
            }
    return summary
