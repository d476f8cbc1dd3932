"""Charts of a comparison (PNG, matplotlib without a display)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..heatmap import blocks_of_groups, coefficient_heatmap_figure  # noqa: E402,F401  (re-exported)
from .methods import METHODS  # noqa: E402

#: characters per line of a row label on a chart (longer labels wrap; the table keeps them on one line)
LABEL_WIDTH = 34


def short_label(label: str) -> str:
    """A chart's row label: the table's label, wrapped so that it never runs off the figure."""
    return textwrap.fill(label, LABEL_WIDTH)


def _save(figure, path: Path) -> None:
    """Save with every label inside the picture (tight bounding box around the laid-out figure)."""
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def radar_figure(tasks: List[str], rows: List[dict], title: str):
    """One polygon per finished method over the per-task scores; the legend below the plot, not over it."""
    angles = np.linspace(0, 2 * math.pi, len(tasks), endpoint=False).tolist()
    figure, axes = plt.subplots(figsize=(7, 8), subplot_kw={"polar": True}, layout="constrained")
    shown = [r for r in rows if r["status"] == "finished" and all(r.get(t) is not None for t in tasks)]
    for row, colour in zip(shown, distinct_colours(len(shown))):
        values = [row[t] for t in tasks]
        axes.plot(
            angles + angles[:1], values + values[:1], linewidth=1.5, label=short_label(row["label"]), color=colour
        )
    axes.set_xticks(angles)
    axes.set_xticklabels(tasks, fontsize=8)
    axes.set_ylim(0, 100)  # scores in %
    axes.set_rlabel_position(180 / max(len(tasks), 1))  # the radial scale between the first two spokes
    axes.tick_params(axis="y", labelsize=7)
    axes.set_title(title, pad=18)
    figure.legend(loc="outside lower center", ncol=2, fontsize=8)
    return figure


def radar_chart(tasks: List[str], rows: List[dict], path: Path, title: str) -> None:
    _save(radar_figure(tasks, rows, title), path)


def bar_figure(rows: List[dict], title: str):
    """Average score per finished method; failed or unavailable methods are listed as such."""
    finished = [r for r in rows if r["status"] == "finished" and r.get("average") is not None]
    lines = sum(short_label(r["label"]).count("\n") + 1 for r in finished)
    figure, axes = plt.subplots(figsize=(9, 0.3 * max(lines, 1) + 0.25 * len(finished) + 1.5), layout="constrained")
    labels = [short_label(r["label"]) for r in finished]
    values = [r["average"] for r in finished]
    spreads = [r.get("average_std", 0.0) if len(r.get("seeds", [])) > 1 else 0.0 for r in finished]
    colours = ["tab:orange" if METHODS[r["method"]].ours else "tab:blue" for r in finished]
    # over several seeds: the bar is the mean and the whisker one standard deviation either side
    bars = axes.barh(labels, values, xerr=spreads if any(spreads) else None, capsize=3, color=colours)
    for bar, value, spread in zip(bars, values, spreads):
        text = f" {value:.1f}" + (f" ± {spread:.1f}" if spread else "")
        axes.text(bar.get_width() + spread, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 10 * math.ceil(max(values + [1.0]) * 1.15 / 10))  # room for the value labels
    figure.get_layout_engine().set(w_pad=0.15)  # the last x tick label is centred on the axes' right edge
    axes.set_xlabel("average score (%)")
    axes.tick_params(axis="y", labelsize=8)
    missing = [f"{r['label']}: {r['status'].replace('_', ' ')}" for r in rows if r not in finished]
    axes.set_title(title + ("\n" + textwrap.fill("(" + "; ".join(missing) + ")", 100) if missing else ""), fontsize=9)
    return figure


def bar_chart(rows: List[dict], path: Path, title: str) -> None:
    _save(bar_figure(rows, title), path)


def distinct_colours(count: int) -> List:
    """``count`` colours no two alike (matplotlib's ten-colour cycle repeats from the eleventh row on)."""
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("gist_rainbow")(x) for x in np.linspace(0, 1, count, endpoint=False)]


def best_baseline(tasks: List[str], rows: List[dict]) -> Dict[str, float]:
    """Per task, the best score of the finished merging baselines (not ours, not zero-shot or individual)."""
    baselines = [
        r
        for r in rows
        if r["status"] == "finished" and not METHODS[r["method"]].ours and not METHODS[r["method"]].reference
    ]
    return {
        t: max(r[t] for r in baselines if r.get(t) is not None)
        for t in tasks
        if any(r.get(t) is not None for r in baselines)
    }


def gap_figure(tasks: List[str], rows: List[dict], title: str):
    """Each of our methods' difference to the best merging baseline, task by task (points; right: better)."""
    best = best_baseline(tasks, rows)
    ours = [r for r in rows if r["status"] == "finished" and METHODS[r["method"]].ours]
    shown = [t for t in tasks if t in best]
    figure, axes = plt.subplots(figsize=(9, 0.35 * len(shown) * max(len(ours), 1) + 1.8), layout="constrained")
    height = 0.8 / max(len(ours), 1)
    for index, (row, colour) in enumerate(zip(ours, distinct_colours(len(ours)))):
        gaps = [row[t] - best[t] if row.get(t) is not None else 0.0 for t in shown]
        positions = np.arange(len(shown)) + index * height
        axes.barh(positions, gaps, height=height, label=short_label(row["label"]), color=colour)
    axes.set_yticks(np.arange(len(shown)) + height * (len(ours) - 1) / 2, shown, fontsize=8)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.invert_yaxis()
    axes.set_xlabel("difference to the best merging baseline of the task (points)")
    axes.set_title(title, fontsize=9)
    if ours:
        figure.legend(loc="outside lower center", ncol=2, fontsize=8)
    return figure


def gap_chart(tasks: List[str], rows: List[dict], path: Path, title: str) -> None:
    _save(gap_figure(tasks, rows, title), path)


def coefficient_heatmap(
    coefficients: np.ndarray, tasks: Sequence[str], layer_of_group: Sequence[Optional[int]], path: Path, title: str
) -> None:
    figure = coefficient_heatmap_figure(coefficients, tasks, layer_of_group, title)
    figure.savefig(path, dpi=120)
    plt.close(figure)


__all__ = [
    "radar_chart",
    "bar_chart",
    "gap_chart",
    "blocks_of_groups",
    "coefficient_heatmap",
    "coefficient_heatmap_figure",
]
