"""Evaluation of models that carry a part per task, shared by our task pools.

Before each task, a task-aware task pool calls ``model.set_task(task)`` when the model has it (Model
Tinting, EMR-Merging, any FusionBench ``ModulatedModel``) and uses ``model.task_head(task)`` as the
task's head when the model provides one. After evaluation it adds the model's ``report_extras``
(adaptation figures) to the report under ``adaptation`` and prints a per-task table.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn


class TaskAwareEvaluation:
    _model_under_evaluation: Optional[nn.Module] = None
    #: also write each task's logits and labels to ``<log dir>/predictions/<task>.pt`` (for analyses)
    save_predictions: bool = False

    def _save_task_predictions(self, task_name: str, logits: Tensor, labels: Tensor) -> None:
        log_dir = getattr(self, "log_dir", None)
        if not self.save_predictions or log_dir is None or not self.fabric.is_global_zero:
            return
        folder = os.path.join(log_dir, "predictions")
        os.makedirs(folder, exist_ok=True)
        torch.save({"logits": logits.detach().float().cpu(), "labels": labels.detach().cpu()}, os.path.join(folder, f"{task_name}.pt"))

    def _switch_to_task(self, task_name: str) -> Optional[nn.Module]:
        """Put the model in ``task_name``'s configuration; return its own head for the task, if any."""
        model = self._model_under_evaluation
        if model is None:
            return None
        if callable(getattr(model, "set_task", None)):
            model.set_task(task_name)
        task_head = getattr(model, "task_head", None)
        return task_head(task_name) if callable(task_head) else None

    def _evaluate_task_aware(self, evaluate, model: nn.Module, *args, **kwargs) -> Dict[str, Any]:
        self._model_under_evaluation = model
        try:
            report = evaluate(model, *args, **kwargs)
        finally:
            self._model_under_evaluation = None
        extras = getattr(model, "report_extras", None)
        if extras:
            report["adaptation"] = extras
        print_report_table(report)
        return report


@rank_zero_only
def print_report_table(report: Dict[str, Any]) -> None:
    """Print the per-task headline metric (``score`` where the task pool reports one, else accuracy)."""
    from rich.console import Console
    from rich.table import Table

    key = "score" if any(isinstance(v, dict) and "score" in v for v in report.values()) else "accuracy"
    method = report.get("adaptation", {}).get("method", "merged model")
    table = Table(title=f"{method}: {'score' if key == 'score' else 'accuracy'} per task (%)", min_width=48)
    table.add_column("task")
    table.add_column("metric" if key == "score" else "", justify="left")
    table.add_column(key, justify="right")
    for task, result in report.items():
        if isinstance(result, dict) and key in result and task != "average":
            table.add_row(task, result.get("metric", ""), f"{100 * result[key]:.2f}")
    if key in report.get("average", {}):
        table.add_row("[bold]average[/bold]", "", f"[bold]{100 * report['average'][key]:.2f}[/bold]")
    Console().print(table)


class PredictionRecorder:
    """Wraps a task pool's classifier and test loader to keep the logits and labels they see."""

    def __init__(self):
        self.logits: List[Tensor] = []
        self.labels: List[Tensor] = []

    def loader(self, loader: Iterable):
        for batch in loader:
            self.labels.append(batch[1].detach().cpu())
            yield batch

    def classifier(self, classifier: nn.Module, logits_of=lambda output: output):
        recorder = self

        class Recording(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = classifier

            def forward(self, *args, **kwargs):
                output = self.inner(*args, **kwargs)
                recorder.logits.append(logits_of(output).detach().float().cpu())
                return output

        return Recording()

    def result(self):
        return torch.cat(self.logits), torch.cat(self.labels)
