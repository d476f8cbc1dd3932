"""Comparison tables (Markdown and CSV) from the runs' reports, with the published numbers beside them."""

from __future__ import annotations

import csv
import io
from typing import Dict, List, Optional, Tuple

from .methods import METHODS
from .runner import RunResult

#: published averages (%, GLUE as 0-1 x 100) per suite, from ANCHORS.md: the Model Tinting paper for
#: the task_vectors and RoBERTa checkpoints, FusionBench's documentation for its ViT-B/32 TA8 pool.
PUBLISHED: Dict[str, Dict[str, Tuple[float, str]]] = {
    "ViT-B-32_TA8": {
        "individual": (90.5, "paper"), "task_arithmetic": (69.1, "paper"), "adamerging": (80.1, "paper"),
        "adamerging_surgery": (86.1, "paper"), "emr_merging": (88.7, "paper"), "model_tinting": (89.6, "paper"),
        "model_tinting_plusplus": (90.1, "paper, about"),
    },
    "ViT-B-16_TA8": {
        "individual": (92.9, "paper"), "task_arithmetic": (73.8, "paper"), "adamerging": (85.7, "paper, AdaMerging++"),
        "adamerging_surgery": (88.8, "paper"), "emr_merging": (91.3, "paper"), "model_tinting": (91.8, "paper"),
        "model_tinting_plusplus": (92.0, "paper"),
    },
    "ViT-L-14_TA8": {
        "adamerging_surgery": (92.3, "paper"), "emr_merging": (93.7, "paper"), "model_tinting": (93.8, "paper"),
        "model_tinting_plusplus": (93.8, "paper, about"),
    },
    "roberta-base_glue": {
        "individual": (85.56, "paper"), "task_arithmetic": (66.65, "paper"), "emr_merging": (80.18, "paper"),
        "model_tinting": (84.04, "paper"),
    },
    "clip-vit-base-patch32_TA8": {
        "individual": (90.3, "FusionBench docs"), "adamerging": (82.6, "FusionBench docs"),
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


def build_rows(results: List[RunResult]) -> Tuple[List[str], List[dict]]:
    tasks: List[str] = []
    for result in results:
        for task in task_scores(result.report or {}):
            if task not in tasks:
                tasks.append(task)
    rows = []
    for result in results:
        row = {"method": result.name, "label": METHODS[result.name].label, "status": result.status, "reason": result.reason}
        if result.report is not None:
            row.update({task: 100 * v for task, v in task_scores(result.report).items()})
            average = average_score(result.report)
            row["average"] = None if average is None else 100 * average
            row["seconds"] = result.seconds
        rows.append(row)
    return tasks, rows


def best_baseline(rows: List[dict], column: str) -> Optional[float]:
    """The best value of a FusionBench baseline (neither ours nor a reference row) in ``column``."""
    values = [
        r[column] for r in rows
        if r.get(column) is not None and not METHODS[r["method"]].ours and not METHODS[r["method"]].reference
    ]
    return max(values) if values else None


def markdown_table(tasks: List[str], rows: List[dict], published: Dict[str, Tuple[float, str]]) -> str:
    columns = [*tasks, "average"]
    # best merged result per column (references excluded), bold
    best = {c: max((r[c] for r in rows if r.get(c) is not None and not METHODS[r["method"]].reference), default=None) for c in columns}
    header = "| method | " + " | ".join(columns) + " | published average |"
    lines = [header, "|---" + "|---:" * (len(columns) + 1) + "|"]
    for row in rows:
        anchor = published.get(row["method"])
        anchor_cell = f"{anchor[0]:.1f} ({anchor[1]})" if anchor else ""
        if row["status"] != "finished":
            what = "failed" if row["status"] == "failed" else "not available"
            lines.append(f"| {row['label']} | {what}: {row['reason']} |" + " |" * (len(columns) - 1) + f" {anchor_cell} |")
            continue
        cells = []
        for column in columns:
            value = row.get(column)
            text = "" if value is None else f"{value:.1f}"
            if value is not None and best[column] is not None and abs(value - best[column]) < 1e-9 and not METHODS[row["method"]].reference:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {anchor_cell} |")
    gains = []
    baseline = best_baseline(rows, "average")
    leader = next((r["label"] for r in rows if r.get("average") == baseline and not METHODS[r["method"]].ours), None)
    for row in rows:
        if METHODS[row["method"]].ours and row.get("average") is not None and baseline is not None:
            gains.append(f"{row['label']}: {row['average'] - baseline:+.1f} points against the best baseline ({leader}, {baseline:.1f})")
    note = "Bold: best merged result per column (reference rows excluded). Scores in %."
    return "\n".join(lines) + "\n\n" + note + ("\n\n" + "\n".join(f"- {g}" for g in gains) if gains else "") + "\n"


def csv_table(tasks: List[str], rows: List[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "status", *tasks, "average", "seconds", "reason"])
    for row in rows:
        values = [("" if row.get(t) is None else f"{row[t]:.4f}") for t in [*tasks, "average"]]
        writer.writerow([row["method"], row["status"], *values, row.get("seconds") or "", row.get("reason", "")])
    return buffer.getvalue()
