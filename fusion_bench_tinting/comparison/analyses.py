"""The paper's analyses, computed from the comparison's runs.

- sparsity: the fraction of learned coefficients below 1e-5 and a heat map of them (tasks x tensors);
- discrepancy: per task, the share of samples the individual model gets right and the merged one wrong,
  and the reverse;
- loss correlation: per task, the Spearman correlation between the ground-truth loss of the merged
  model and the two unsupervised objectives (the teacher-label cross-entropy of Model Tinting, the entropy
  of AdaMerging), before adaptation (Task Arithmetic's merged model) and after (Model Tinting's).

Discrepancy and loss correlation need the per-sample predictions the task-aware task pools write with
``taskpool.save_predictions=true``; regression tasks are left out of both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from .plots import blocks_of_groups, coefficient_heatmap
from .runner import RunResult

ANALYSES = ("sparsity", "discrepancy", "loss_correlation")


def predictions(result: Optional[RunResult]) -> Dict[str, Dict[str, torch.Tensor]]:
    if result is None or result.log_dir is None:
        return {}
    folder = Path(result.log_dir) / "predictions"
    from safetensors.torch import load_file

    return {p.stem: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}


def sparsity(results: Dict[str, RunResult], out: Path) -> Dict[str, dict]:
    from safetensors import safe_open

    found = {}
    for name in ("model_tinting", "model_tinting_plusplus"):
        result = results.get(name)
        weights = Path(result.log_dir or "") / "model_tinting.safetensors" if result and result.log_dir else None
        if result is None or result.status != "finished" or weights is None or not weights.exists():
            continue
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata()
            raw = f.get_tensor("coefficients")
        config = Path(result.log_dir) / "model_tinting_config.yaml"
        clamp = OmegaConf.load(config).get("clamp_weights", True) if config.exists() else True
        coefficients = raw.clamp(0, 1) if clamp else raw  # as applied in the merge
        tasks = json.loads(metadata["tasks"])
        groups = json.loads(metadata.get("coefficient_groups", "[]"))
        layers = blocks_of_groups(groups) or [None] * coefficients.shape[1]
        image = out / f"coefficients_{name}.png"
        coefficient_heatmap(coefficients.numpy(), tasks, layers, image, f"{name}: learned merging coefficients")
        found[name] = {
            "fraction_below_1e-5": float((coefficients.abs() < 1e-5).float().mean()),
            "reported_fraction_below_1e-5": result.report.get("adaptation", {}).get("coefficients_below_1e-5"),
            "mean_per_task": dict(zip(tasks, coefficients.mean(dim=1).tolist())),
            "heatmap": image.name,
        }
    return found


def discrepancy(results: Dict[str, RunResult]) -> Dict[str, Dict[str, dict]]:
    reference = predictions(results.get("individual"))
    table = {}
    for name, result in results.items():
        if name in ("individual", "pretrained") or result.status != "finished":
            continue
        merged = predictions(result)
        per_task = {}
        for task, ref in reference.items():
            if task not in merged or ref["logits"].shape[-1] == 1:
                continue
            labels = ref["labels"]
            right_individual = ref["logits"].argmax(-1) == labels
            right_merged = merged[task]["logits"].argmax(-1) == labels
            per_task[task] = {
                "individual_right_merged_wrong": float((right_individual & ~right_merged).float().mean()),
                "merged_right_individual_wrong": float((right_merged & ~right_individual).float().mean()),
            }
        if per_task:
            table[name] = per_task
    return table


def _objective_correlations(merged: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor]) -> Dict[str, float]:
    logits, labels = merged["logits"], merged["labels"].long()
    ground_truth = F.cross_entropy(logits, labels, reduction="none")
    teacher_ce = F.cross_entropy(logits, teacher["logits"].argmax(-1), reduction="none")
    log_p = logits.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return {
        "teacher_ce": float(spearmanr(teacher_ce.numpy(), ground_truth.numpy()).statistic),
        "entropy": float(spearmanr(entropy.numpy(), ground_truth.numpy()).statistic),
    }


def loss_correlation(results: Dict[str, RunResult]) -> Dict[str, Dict[str, dict]]:
    teacher = predictions(results.get("individual"))
    stages = {
        "before (task arithmetic)": predictions(results.get("task_arithmetic")),
        "after (model tinting)": predictions(results.get("model_tinting")),
    }
    table: Dict[str, Dict[str, dict]] = {}
    for task, reference in teacher.items():
        if reference["logits"].shape[-1] == 1:
            continue
        for stage, merged in stages.items():
            if task in merged:
                table.setdefault(task, {})[stage] = _objective_correlations(merged[task], reference)
    return table


def _table(title: str, columns: List[str], rows: List[List[str]]) -> List[str]:
    """A Markdown section with a table whose first two columns are labels and the rest numbers."""
    rule = "|---|---|" + "---:|" * (len(columns) - 2)
    return [f"### {title}\n", "| " + " | ".join(columns) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows), ""]


def markdown(analyses: Dict[str, dict]) -> str:
    parts = []
    if analyses.get("sparsity"):
        parts.append("### Coefficient sparsity\n")
        for name, values in analyses["sparsity"].items():
            parts.append(
                f"- {name}: {100 * values['fraction_below_1e-5']:.1f}% of the coefficients are below 1e-5 "
                f"(heat map: `{values['heatmap']}`)"
            )
        parts.append("")
    if analyses.get("discrepancy"):
        rows = [
            [
                name,
                task,
                f"{100 * v['individual_right_merged_wrong']:.1f}",
                f"{100 * v['merged_right_individual_wrong']:.1f}",
            ]
            for name, per_task in analyses["discrepancy"].items()
            for task, v in per_task.items()
        ]
        parts += _table(
            "Prediction discrepancy against the individual models (% of test samples)",
            ["method", "task", "individual right, merged wrong", "merged right, individual wrong"],
            rows,
        )
    if analyses.get("loss_correlation"):
        rows = [
            [task, stage, f"{v['teacher_ce']:.3f}", f"{v['entropy']:.3f}"]
            for task, stages in analyses["loss_correlation"].items()
            for stage, v in stages.items()
        ]
        parts += _table(
            "Spearman correlation with the ground-truth loss",
            ["task", "merged model", "teacher-label CE (ours)", "entropy (AdaMerging)"],
            rows,
        )
    return "\n".join(parts)
