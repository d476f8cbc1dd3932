"""Evaluation of models that carry a part per task, shared by our task pools.

Before each task, a task-aware task pool calls ``model.set_task(task)`` when the model has it (Model
Tinting, EMR-Merging, any FusionBench ``ModulatedModel``) and uses ``model.task_head(task)`` as the
task's head when the model provides one. After evaluation it adds the model's ``report_extras``
(adaptation figures) to the report under ``adaptation``.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from torchmetrics.functional.classification import multiclass_calibration_error

log = logging.getLogger(__name__)

#: confidence bins of the expected calibration error (as the authors' evaluation)
ECE_BINS = 15


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE: over ``bins`` equal-width bins of the predicted class's probability, the
    sample-weighted mean gap between the bin's accuracy and its mean confidence."""
    probabilities = logits.float().softmax(dim=-1).cpu()
    return float(
        multiclass_calibration_error(
            probabilities, labels.long().cpu(), num_classes=logits.shape[-1], n_bins=bins, norm="l1"
        )
    )


class TaskAwareEvaluation:
    _model_under_evaluation: Optional[nn.Module] = None
    #: also write each task's logits and labels to ``<log dir>/predictions/<task>.safetensors`` (for analyses)
    save_predictions: bool = False

    def _save_task_predictions(self, task_name: str, logits: Tensor, labels: Tensor) -> None:
        log_dir = getattr(self, "log_dir", None)
        if not self.save_predictions or log_dir is None or not self.fabric.is_global_zero:
            return
        folder = os.path.join(log_dir, "predictions")
        os.makedirs(folder, exist_ok=True)
        from safetensors.torch import save_file

        tensors = {"logits": logits.detach().float().cpu().contiguous(), "labels": labels.detach().cpu().contiguous()}
        save_file(tensors, os.path.join(folder, f"{task_name}.safetensors"))

    def _whole_test_set(self, logits: Tensor, labels: Tensor, num_samples: int) -> Tuple[Tensor, Tensor]:
        """Data parallel: this process recorded only its shard (:func:`evaluation_shard`); gather every
        process's shard and put the samples back in test-set order, padding dropped. Every process calls it."""
        world_size = self.fabric.world_size
        if world_size == 1:
            return logits, labels

        def whole(tensor: Tensor) -> Tensor:
            shards = self.fabric.all_gather(tensor.to(self.fabric.device)).cpu()  # (world_size, shard, ...)
            return shards.transpose(0, 1).reshape(-1, *tensor.shape[1:])[:num_samples]  # shard r holds r, r+W, ...

        return whole(logits), whole(labels)

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
        _average_calibration_error(report)
        extras = getattr(model, "report_extras", None)
        if extras:
            report["adaptation"] = extras
        return finite_or_none(report)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: FusionBench writes the report with
    ``json.dump``, which would write a bare ``NaN`` that strict JSON readers reject."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _average_calibration_error(report: Dict[str, Any]) -> None:
    """Add the mean of the tasks' expected calibration errors to the report's average (FusionBench's task
    pools average accuracy and loss only)."""
    values = [v["ece"] for k, v in report.items() if k != "average" and isinstance(v, dict) and "ece" in v]
    if values and isinstance(report.get("average"), dict) and "ece" not in report["average"]:
        report["average"]["ece"] = sum(values) / len(values)


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


def evaluation_shard(num_samples: int, rank: int, world_size: int) -> Tensor:
    """The test samples process ``rank`` of ``world_size`` evaluates in FusionBench's CLIP task pools: Fabric
    puts a ``DistributedSampler`` in their loaders (the last shard padded with the first samples, so every
    process runs as many batches), and their metrics sum over the processes."""
    return torch.tensor(list(DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False)))
