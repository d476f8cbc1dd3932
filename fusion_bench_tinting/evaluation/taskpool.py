"""Task pools that evaluate models carrying a part per task.

FusionBench's CLIP task pool evaluates one shared model with their own zero-shot (or pool) heads and
never tell the model which task it is on. These subclasses, before each task:

- call ``model.set_task(task)`` when the model has it (Model Tinting, EMR-Merging, any
  ``ModulatedModel``), so the task's own weights are switched in;
- use ``model.task_head(task)`` as the classification head when the model provides one.

After evaluation they add the model's ``report_extras`` (adaptation figures) to the report under
``adaptation`` and print a per-task table.
"""

from __future__ import annotations

import logging
from typing import Optional

from fusion_bench.taskpool import CLIPVisionModelTaskPool
from torch import nn

from .task_aware import PredictionRecorder, TaskAwareEvaluation, expected_calibration_error

log = logging.getLogger(__name__)


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


def recorded_evaluation(pool, evaluate, classifier, test_loader, task_name, logits_of, **kwargs):
    """Run the stock per-task evaluation, keeping its logits and labels: they add the expected calibration
    error to the task's result and are saved when predictions are."""
    recorder = PredictionRecorder()
    result = evaluate(
        recorder.classifier(classifier, logits_of), recorder.loader(test_loader), task_name=task_name, **kwargs
    )
    logits, labels = pool._whole_test_set(*recorder.result(), len(pool.test_datasets[task_name]))
    if pool.save_predictions:
        pool._save_task_predictions(task_name, logits, labels)
    return {**result, "ece": expected_calibration_error(logits, labels)}


class TaskAwareCLIPVisionModelTaskPool(TaskAwareEvaluation, CLIPVisionModelTaskPool):
    """``CLIPVisionModelTaskPool`` that switches per-task models to each task (see module doc)."""

    def __init__(self, *args, base_model: Optional[str] = None, save_predictions: bool = False, **kwargs):
        """``base_model``: FusionBench's CLIP task pool template names it only to fill in ``clip_model`` and
        ``processor``; taken here so that it is not reported as an unused argument."""
        super().__init__(*args, **kwargs)
        self.base_model = base_model
        self.save_predictions = save_predictions

    def evaluate(self, model, name=None, **kwargs):
        return self._evaluate_task_aware(super().evaluate, model, name=name, **kwargs)

    def _evaluate(self, classifier, test_loader, num_classes: int, task_name: str = None):
        head = self._switch_to_task(task_name)
        if head is not None:
            classifier = TaskHeadCLIPClassifier(classifier, head)
        return recorded_evaluation(
            self,
            super()._evaluate,
            classifier,
            test_loader,
            task_name,
            lambda out: out["logits"],
            num_classes=num_classes,
        )
