"""Task metrics for sequence classification, as the paper reports GLUE.

Headline ("score") per task: Matthews correlation for CoLA, the mean of Pearson and Spearman
correlations for STS-B (and any regression task), accuracy otherwise; MRPC and QQP also get F1.
The suite's score is the unweighted mean of the task scores. Classification tasks also get the expected
calibration error (``ece``: 15 equal-width confidence bins, as the authors' evaluation computes it).
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor
from torchmetrics.functional import matthews_corrcoef, pearson_corrcoef, spearman_corrcoef
from torchmetrics.functional.classification import binary_f1_score

from ..evaluation.task_aware import expected_calibration_error

HEADLINE = {"cola": "matthews_correlation", "stsb": "pearson_spearman"}
WITH_F1 = {"mrpc", "qqp"}


def metric_names(task: str, num_outputs: int) -> List[str]:
    """The metrics reported for a task; the first is its headline."""
    if num_outputs == 1:
        return ["pearson_spearman", "pearson", "spearman"]
    headline = HEADLINE.get(task, "accuracy")
    names = [headline] + [n for n in ("accuracy", "matthews_correlation") if n != headline]
    if task in WITH_F1 and num_outputs == 2:
        names.append("f1")
    return names


def compute_metrics(task: str, logits: Tensor, labels: Tensor) -> Dict[str, float]:
    """All metrics of ``task`` plus ``score`` (its headline), from the logits of the whole split."""
    logits, labels = logits.float().cpu(), labels.cpu()
    num_outputs = logits.shape[-1]
    results: Dict[str, float] = {}
    if num_outputs == 1:
        predictions, targets = logits[:, 0], labels.float()
        results["pearson"] = float(pearson_corrcoef(predictions, targets))
        results["spearman"] = float(spearman_corrcoef(predictions, targets))
        results["pearson_spearman"] = (results["pearson"] + results["spearman"]) / 2
    else:
        predictions, targets = logits.argmax(dim=-1), labels.long()
        results["accuracy"] = float((predictions == targets).float().mean())
        results["matthews_correlation"] = float(
            matthews_corrcoef(predictions, targets, task="multiclass", num_classes=num_outputs)
        )
        if "f1" in metric_names(task, num_outputs):
            results["f1"] = float(binary_f1_score(predictions, targets))
    names = metric_names(task, num_outputs)
    ordered = {name: results[name] for name in names}
    if num_outputs > 1:
        ordered["ece"] = expected_calibration_error(logits, labels)
    return {"metric": names[0], "score": ordered[names[0]], **ordered}


def average_scores(report: Dict[str, Dict]) -> Dict[str, float]:
    """Unweighted means over tasks of the headline score and of accuracy (classification tasks)."""
    tasks = [v for v in report.values() if isinstance(v, dict) and "score" in v]
    average = {"score": sum(t["score"] for t in tasks) / len(tasks)} if tasks else {}
    for metric in ("accuracy", "ece"):
        values = [t[metric] for t in tasks if metric in t]
        if values:
            average[metric] = sum(values) / len(values)
    return average


def loss_of(logits: Tensor, labels: Tensor) -> Tensor:
    if logits.shape[-1] == 1:
        return torch.nn.functional.mse_loss(logits[:, 0].float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels.long())
