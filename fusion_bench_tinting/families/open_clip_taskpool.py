"""Task-aware evaluation for FusionBench's OpenCLIP task pool: each task's own classification head on the merged
encoder switched to the task (see :mod:`fusion_bench_tinting.evaluation.taskpool`)."""

from __future__ import annotations

from ..compat import ensure_typing_override
from ..evaluation.task_aware import TaskAwareEvaluation
from ..evaluation.taskpool import recorded_evaluation

ensure_typing_override()

from fusion_bench.taskpool.openclip_vision.openclip_taskpool import OpenCLIPVisionModelTaskPool  # noqa: E402


class TaskAwareOpenCLIPVisionModelTaskPool(TaskAwareEvaluation, OpenCLIPVisionModelTaskPool):
    """``OpenCLIPVisionModelTaskPool`` that switches per-task models to each task (see module doc)."""

    def setup(self):
        program = getattr(self, "_program", None)
        modelpool = getattr(program, "modelpool", None)
        if modelpool is not None and getattr(modelpool, "_test_processor", "unset") is None:
            # FusionBench's pool cannot unpickle the task_vectors checkpoints on torch >= 2.6; load the
            # pretrained encoder our way so that its preprocessing is known (see families.open_clip).
            from .open_clip import load_pickled_encoder

            load_pickled_encoder(modelpool, "_pretrained_" if modelpool.has_pretrained else modelpool.model_names[0])
        super().setup()

    def __init__(self, *args, save_predictions: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_predictions = save_predictions

    def evaluate(self, model, **kwargs):
        return self._evaluate_task_aware(super().evaluate, model, **kwargs)

    def _evaluate(self, classifier, test_loader, num_classes: int, task_name: str):
        head = self._switch_to_task(task_name)
        if head is not None:
            classifier.classification_head = head
        return recorded_evaluation(
            self, super()._evaluate, classifier, test_loader, task_name, lambda out: out, num_classes=num_classes
        )
