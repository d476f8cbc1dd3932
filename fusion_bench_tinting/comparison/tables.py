"""Comparison tables (Markdown and CSV) from the runs' reports, with the published numbers beside them."""

from __future__ import annotations

import csv
import io
import math
from typing import Dict, List, Optional, Tuple

from ..evaluation.task_aware import ECE_BINS
from .methods import METHODS
from .runner import RunResult

#: published averages (%, GLUE as 0-1 x 100) per suite, from ANCHORS.md: the Model Tinting paper for
#: the task_vectors and RoBERTa checkpoints, FusionBench's documentation for its ViT-B/32 TA8 pool.
PUBLISHED: Dict[str, Dict[str, Tuple[float, str]]] = {
    "ViT-B-32_TA8": {
        "individual": (90.5, "paper"),
        "task_arithmetic": (69.1, "paper"),
        "adamerging": (80.1, "paper"),
        "adamerging_surgery": (86.1, "paper"),
        "emr_merging": (88.7, "paper"),
        "model_tinting": (89.6, "paper"),
        "model_tinting_plusplus": (90.1, "paper, about"),
    },
    "ViT-B-16_TA8": {
        "individual": (92.9, "paper"),
        "task_arithmetic": (73.8, "paper"),
        "adamerging": (85.7, "paper, AdaMerging++"),
        "adamerging_surgery": (88.8, "paper"),
        "emr_merging": (91.3, "paper"),
        "model_tinting": (91.8, "paper"),
        "model_tinting_plusplus": (92.0, "paper"),
    },
    "ViT-L-14_TA8": {
        "adamerging_surgery": (92.3, "paper"),
        "emr_merging": (93.7, "paper"),
        "model_tinting": (93.8, "paper"),
        "model_tinting_plusplus": (93.8, "paper, about"),
    },
    "roberta-base_glue": {
        "individual": (85.56, "paper"),
        "task_arithmetic": (66.65, "paper"),
        "emr_merging": (80.18, "paper"),
        "model_tinting": (84.04, "paper"),
    },
    "clip-vit-base-patch32_TA8": {
        "individual": (90.3, "FusionBench docs"),
        "adamerging": (82.6, "FusionBench docs"),
    },
}


def published_for(modelpool: str) -> Dict[str, Tuple[float, str]]:
    return PUBLISHED.get(modelpool.rsplit("/", 1)[-1], {})


def task_scores(report: dict) -> Dict[str, float]:
    """Headline value per task: ``score`` where the task pool reports one, else accuracy."""
    scores = {}
    for task, value in report.items():
        if task in ("average", "model_info", "adaptation", "name") or not isinstance(value, dict):
            continue
        if "score" in value:
            scores[task] = value["score"]
        elif "accuracy" in value:
            scores[task] = value["accuracy"]
    return scores


def average_score(report: dict) -> Optional[float]:
    average = report.get("average", {})
    return average.get("score", average.get("accuracy"))


_NOT_TASKS = ("average", "model_info", "adaptation", "name")


def task_values(report: dict, metric: str) -> Dict[str, float]:
    """Per-task values of ``metric``: ``score`` (the headline, see :func:`task_scores`) or a reported key
    such as ``ece``."""
    if metric == "score":
        return task_scores(report)
    return {t: v[metric] for t, v in report.items() if t not in _NOT_TASKS and isinstance(v, dict) and metric in v}


def average_value(report: dict, metric: str) -> Optional[float]:
    return average_score(report) if metric == "score" else report.get("average", {}).get(metric)


def _mean_and_std(values: List[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, spread


def build_rows(groups: List[List[RunResult]], metric: str = "score") -> Tuple[List[str], List[dict]]:
    """One row per method from its runs (one per seed): per-task and average values of ``metric`` in %, as
    the mean over the finished runs, with ``<column>_std`` (sample standard deviation) and ``seeds``."""
    tasks: List[str] = []
    for group in groups:
        for result in group:
            for task in task_values(result.report or {}, metric):
                if task not in tasks:
                    tasks.append(task)
    rows = []
    for group in groups:
        finished = [r for r in group if r.report is not None]
        first = finished[0] if finished else group[0]
        failed = [r for r in group if r.status == "failed"]
        row = {
            "method": first.name,
            "label": METHODS[first.name].label,
            "status": "finished" if finished else first.status,
            "reason": "" if finished else first.reason,
            "seeds": [r.seed for r in finished],
            "seeds_not_run": [r.seed for r in group if r.status == "not_run"],
        }
        if failed and finished:
            row["reason"] = f"{len(failed)} of {len(group)} runs failed: {failed[0].reason}"
        elif row["seeds_not_run"] and finished:
            row["reason"] = f"seeds not run yet: {', '.join(map(str, row['seeds_not_run']))}"
        if finished:
            for column in [*tasks, "average"]:
                values = [_value(r.report, column, metric) for r in finished]
                values = [100 * v for v in values if v is not None]
                if values:
                    row[column], row[f"{column}_std"] = _mean_and_std(values)
            seconds = [r.seconds for r in finished if r.seconds is not None]
            row["seconds"] = sum(seconds) / len(seconds) if seconds else None
        rows.append(row)
    return tasks, rows


def _value(report: dict, column: str, metric: str) -> Optional[float]:
    return average_value(report, metric) if column == "average" else task_values(report, metric).get(column)


def best_baseline(rows: List[dict], column: str) -> Optional[float]:
    """The best value of a FusionBench baseline (neither ours nor a reference row) in ``column``."""
    values = [
        r[column]
        for r in rows
        if r.get(column) is not None and not METHODS[r["method"]].ours and not METHODS[r["method"]].reference
    ]
    return max(values) if values else None


def _cell(row: dict, column: str) -> str:
    """A table cell: the value, with ``± std`` when several seeds were averaged."""
    value = row.get(column)
    if value is None:
        return ""
    return f"{value:.1f} ± {row[column + '_std']:.1f}" if len(row.get("seeds", [])) > 1 else f"{value:.1f}"


def markdown_table(tasks: List[str], rows: List[dict], published: Dict[str, Tuple[float, str]]) -> str:
    columns = [*tasks, "average"]
    # best merged result per column (references excluded), bold
    best = {
        c: max((r[c] for r in rows if r.get(c) is not None and not METHODS[r["method"]].reference), default=None)
        for c in columns
    }
    header = "| method | " + " | ".join(columns) + " | published average |"
    lines = [header, "|---" + "|---:" * (len(columns) + 1) + "|"]
    for row in rows:
        anchor = published.get(row["method"])
        anchor_cell = f"{anchor[0]:.1f} ({anchor[1]})" if anchor else ""
        if row["status"] != "finished":
            what = {"failed": "failed", "not_run": "not run"}.get(row["status"], "not available")
            lines.append(
                f"| {row['label']} | {what}: {row['reason']} |" + " |" * (len(columns) - 1) + f" {anchor_cell} |"
            )
            continue
        cells = []
        for column in columns:
            value, text = row.get(column), _cell(row, column)
            if (
                value is not None
                and best[column] is not None
                and abs(value - best[column]) < 1e-9
                and not METHODS[row["method"]].reference
            ):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {anchor_cell} |")
    gains = []
    baseline = best_baseline(rows, "average")
    leader = next((r["label"] for r in rows if r.get("average") == baseline and not METHODS[r["method"]].ours), None)
    for row in rows:
        if METHODS[row["method"]].ours and row.get("average") is not None and baseline is not None:
            gains.append(
                f"{row['label']}: {row['average'] - baseline:+.1f} points against the best baseline "
                f"({leader}, {baseline:.1f})"
            )
    note = "Bold: best merged result per column (reference rows excluded). Scores in %."
    seeded = sorted({seed for row in rows for seed in row.get("seeds", []) if seed is not None})
    if len(seeded) == 1:
        note += f" Methods that draw at random ran with seed {seeded[0]}; the others are deterministic."
    elif seeded:
        note += (
            f" Methods that draw at random: mean ± standard deviation over seeds {', '.join(map(str, seeded))};"
            " the others are deterministic and ran once."
        )
    for row in rows:
        if row["status"] == "finished" and row.get("seeds_not_run"):
            done, missing = (", ".join(map(str, row[key])) for key in ("seeds", "seeds_not_run"))
            plural = "s" if len(row["seeds"]) > 1 else ""
            note += f" {row['label']}: seed{plural} {done} only ({missing} not run yet)."
    return "\n".join(lines) + "\n\n" + note + ("\n\n" + "\n".join(f"- {g}" for g in gains) if gains else "") + "\n"


def calibration_table(tasks: List[str], rows: List[dict]) -> str:
    """Expected calibration error (%) per task for the methods whose task pool reports it (lower is better)."""
    columns = [*tasks, "average"]
    with_ece = [r for r in rows if r["status"] == "finished" and any(r.get(c) is not None for c in columns)]
    if not with_ece:
        return ""
    lines = ["| method | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    for row in with_ece:
        lines.append(f"| {row['label']} | " + " | ".join(_cell(row, c) for c in columns) + " |")
    note = f"Expected calibration error (%, {ECE_BINS} equal-width confidence bins; lower is better)."
    return "\n".join(lines) + "\n\n" + note + "\n"


def csv_table(tasks: List[str], rows: List[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = [*tasks, "average"]
    writer.writerow(["method", "status", *columns, *[f"{c}_std" for c in columns], "seeds", "seconds", "reason"])
    for row in rows:
        values = [("" if row.get(c) is None else f"{row[c]:.4f}") for c in [*columns, *[f"{c}_std" for c in columns]]]
        seeds = " ".join(str(s) for s in row.get("seeds", []) if s is not None)
        writer.writerow([row["method"], row["status"], *values, seeds, row.get("seconds") or "", row.get("reason", "")])
    return buffer.getvalue()
