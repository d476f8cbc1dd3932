"""Charts of a comparison (PNG, matplotlib without a display)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..heatmap import blocks_of_groups, coefficient_heatmap_figure  # noqa: E402,F401  (re-exported)
from .methods import METHODS  # noqa: E402


def radar_chart(tasks: List[str], rows: List[dict], path: Path, title: str) -> None:
    """One polygon per finished method over the per-task scores."""
    angles = np.linspace(0, 2 * math.pi, len(tasks), endpoint=False).tolist()
    figure, axes = plt.subplots(figsize=(7, 7), subplot_kw={"polar": True})
    for row in rows:
        if row["status"] != "finished" or any(row.get(t) is None for t in tasks):
            continue
        values = [row[t] for t in tasks]
        axes.plot(angles + angles[:1], values + values[:1], linewidth=1.5, label=row["label"])
    axes.set_xticks(angles)
    axes.set_xticklabels(tasks, fontsize=8)
    axes.set_title(title)
    axes.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def bar_chart(rows: List[dict], path: Path, title: str) -> None:
    """Average score per finished method; failed or unavailable methods are listed as such."""
    finished = [r for r in rows if r["status"] == "finished" and r.get("average") is not None]
    figure, axes = plt.subplots(figsize=(8, 0.45 * max(len(finished), 1) + 1.5))
    labels = [r["label"] for r in finished]
    values = [r["average"] for r in finished]
    spreads = [r.get("average_std", 0.0) if len(r.get("seeds", [])) > 1 else 0.0 for r in finished]
    colours = ["tab:orange" if METHODS[r["method"]].ours else "tab:blue" for r in finished]
    # over several seeds: the bar is the mean and the whisker one standard deviation either side
    bars = axes.barh(labels, values, xerr=spreads if any(spreads) else None, capsize=3, color=colours)
    for bar, value, spread in zip(bars, values, spreads):
        text = f" {value:.1f}" + (f" ± {spread:.1f}" if spread else "")
        axes.text(bar.get_width() + spread, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("average score (%)")
    missing = [f"{r['label']}: {r['status'].replace('_', ' ')}" for r in rows if r not in finished]
    axes.set_title(title + ("\n(" + "; ".join(missing) + ")" if missing else ""), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def coefficient_heatmap(coefficients: np.ndarray, tasks: Sequence[str], layer_of_group: Sequence[Optional[int]], path: Path, title: str) -> None:
    figure = coefficient_heatmap_figure(coefficients, tasks, layer_of_group, title)
    figure.savefig(path, dpi=120)
    plt.close(figure)


__all__ = ["radar_chart", "bar_chart", "blocks_of_groups", "coefficient_heatmap", "coefficient_heatmap_figure"]
