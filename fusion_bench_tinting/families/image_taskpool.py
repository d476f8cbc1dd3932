"""Task-aware evaluation for FusionBench's image-classification pools (ConvNeXt, DINOv2, ResNet).

FusionBench's ``ImageClassificationTaskPool`` evaluates one model for every task (switching only the
``SwitchModule``s it may contain). Merged image classifiers share a backbone but each task has its own head
(class count included), so this subclass evaluates each task with the task's fine-tuned classifier whose
backbone is the merged one and whose head is the model's own for the task when it has one (Model Tinting),
else the fine-tuned head (FusionBench's merging baselines).
"""

from __future__ import annotations

from typing import Any, Dict

from fusion_bench.taskpool.image_classification import ImageClassificationTaskPool

from ..evaluation.task_aware import TaskAwareEvaluation
from ..evaluation.taskpool import recorded_evaluation
from .image_classifier import task_classifier
from .text_taskpool import modelpool_of


class TaskAwareImageClassificationTaskPool(TaskAwareEvaluation, ImageClassificationTaskPool):
    """``ImageClassificationTaskPool`` that evaluates each task with its own head (see module doc)."""

    def __init__(self, *args, save_predictions: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_predictions = save_predictions

    @property
    def _dataloader_kwargs(self) -> Dict[str, Any]:  # the name the shared cached-input path reads
        return dict(self.dataloader_kwargs)

    def evaluate(self, model, name=None, **kwargs):
        return self._evaluate_task_aware(super().evaluate, model, name=name, **kwargs)

    def _evaluate(self, classifier, test_loader, num_classes: int, task_name: str = None):
        model = self._model_under_evaluation if self._model_under_evaluation is not None else classifier
        classifier = self.fabric.to_device(task_classifier(modelpool_of(self), task_name, model))
        return recorded_evaluation(
            self, super()._evaluate, classifier, test_loader, task_name, lambda out: out, num_classes=num_classes
        )
