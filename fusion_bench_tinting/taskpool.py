"""Task pools that evaluate models carrying a part per task.

FusionBench's CLIP task pools evaluate one shared model with their own zero-shot (or pool) heads and
never tell the model which task it is on. These subclasses, before each task:

- call ``model.set_task(task)`` when the model has it (Model Tinting, EMR-Merging, any
  ``ModulatedModel``), so the task's own weights are switched in;
- use ``model.task_head(task)`` as the classification head when the model provides one.

After evaluation they add the model's ``report_extras`` (adaptation figures) to the report under
``adaptation`` and print a per-task table.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import nn

from fusion_bench.taskpool import CLIPVisionModelTaskPool

from .compat import ensure_typing_override

ensure_typing_override()

from fusion_bench.taskpool.openclip_vision.openclip_taskpool import OpenCLIPVisionModelTaskPool  # noqa: E402

log = logging.getLogger(__name__)


class _TaskAwareEvaluation:
    _model_under_evaluation: Optional[nn.Module] = None

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
    from rich.console import Console
    from rich.table import Table

    method = report.get("adaptation", {}).get("method", "merged model")
    table = Table(title=f"{method}: accuracy per task (%)", min_width=48)
    table.add_column("task")
    table.add_column("accuracy", justify="right")
    for task, result in report.items():
        if isinstance(result, dict) and "accuracy" in result and task != "average":
            table.add_row(task, f"{100 * result['accuracy']:.2f}")
    if "accuracy" in report.get("average", {}):
        table.add_row("[bold]average[/bold]", f"[bold]{100 * report['average']['accuracy']:.2f}[/bold]")
    Console().print(table)


class TaskHeadCLIPClassifier(nn.Module):
    """``HFCLIPClassifier`` with the zero-shot head replaced by a task's own head (applied to the
    normalised projected image embeddings, as during adaptation)."""

    def __init__(self, classifier: nn.Module, head: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.head = head

    def forward(self, images, return_image_embeds: bool = False, return_dict: bool = False, task_name=None):
        outputs = self.classifier(images, return_image_embeds=True, return_dict=True, task_name=task_name)
        embeddings = outputs["image_embeds"]
        logits = self.head(embeddings.to(next(self.head.parameters()).dtype))
        if return_dict:
            return {"logits": logits, **({"image_embeds": embeddings} if return_image_embeds else {})}
        return (logits, embeddings) if return_image_embeds else logits


class TaskAwareCLIPVisionModelTaskPool(_TaskAwareEvaluation, CLIPVisionModelTaskPool):
    """``CLIPVisionModelTaskPool`` that switches per-task models to each task (see module doc)."""

    def evaluate(self, model, name=None, **kwargs):
        return self._evaluate_task_aware(super().evaluate, model, name=name, **kwargs)

    def _evaluate(self, classifier, test_loader, num_classes: int, task_name: str = None):
        head = self._switch_to_task(task_name)
        if head is not None:
            classifier = TaskHeadCLIPClassifier(classifier, head)
        return super()._evaluate(classifier, test_loader, num_classes=num_classes, task_name=task_name)


class TaskAwareOpenCLIPVisionModelTaskPool(_TaskAwareEvaluation, OpenCLIPVisionModelTaskPool):
    """``OpenCLIPVisionModelTaskPool`` that switches per-task models to each task (see module doc)."""

    def setup(self):
        program = getattr(self, "_program", None)
        modelpool = getattr(program, "modelpool", None)
        if modelpool is not None and getattr(modelpool, "_test_processor", "unset") is None:
            # FusionBench's pool cannot unpickle the task_vectors checkpoints on torch >= 2.6; load the
            # pretrained encoder our way so that its preprocessing is known (see families.open_clip).
            from .families.open_clip import load_pickled_encoder

            load_pickled_encoder(modelpool, "_pretrained_" if modelpool.has_pretrained else modelpool.model_names[0])
        super().setup()

    def evaluate(self, model, **kwargs):
        return self._evaluate_task_aware(super().evaluate, model, **kwargs)

    def _evaluate(self, classifier, test_loader, num_classes: int, task_name: str):
        head = self._switch_to_task(task_name)
        if head is not None:
            classifier.classification_head = head
        return super()._evaluate(classifier, test_loader, num_classes=num_classes, task_name=task_name)
