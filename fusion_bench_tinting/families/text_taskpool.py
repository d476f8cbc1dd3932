"""Task pools for sequence classification suites (GLUE with RoBERTa/GPT-2, the offline text suite).

Each task is evaluated with its own fine-tuned classifier whose encoder is replaced by the evaluated
(merged) one, and whose head is replaced by the evaluated model's own head for the task when it has
one (Model Tinting). Models that switch per task (``set_task``: Model Tinting, EMR-Merging) are
switched first. Metrics follow the paper: see :mod:`fusion_bench_tinting.families.text_metrics`.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
from fusion_bench import BaseTaskPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin
from fusion_bench.taskpool import GPT2TextClassificationTaskPool
from fusion_bench.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from ..core.console import progress
from ..core.errors import TintingConfigError
from ..evaluation.task_aware import TaskAwareEvaluation, evaluation_shard
from .sequence_classification import task_classifier
from .text_data import resolve_tokenizer
from .text_metrics import average_scores, compute_metrics, loss_of

log = logging.getLogger(__name__)

_MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "label")


def modelpool_of(taskpool) -> nn.Module:
    program = getattr(taskpool, "_program", None)
    modelpool = getattr(program, "modelpool", None)
    if modelpool is None:
        raise TintingConfigError(
            f"{type(taskpool).__name__} takes each task's classifier from the run's model pool; "
            "use it through `fusion_bench` (or set its `_program`)."
        )
    return modelpool


@auto_register_config
class SequenceClassificationTaskPool(TaskAwareEvaluation, LightningFabricMixin, BaseTaskPool):
    """Per-task metrics (GLUE's where the task is a GLUE task) on tokenized test sets."""

    def __init__(
        self,
        test_datasets: DictConfig,
        tokenizer: DictConfig,
        dataloader_kwargs: Optional[DictConfig] = None,
        save_predictions: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)

    def evaluate(self, model: nn.Module, name: Optional[str] = None):
        return self._evaluate_task_aware(self._evaluate_tasks, model, name=name)

    @torch.no_grad()
    def _shard(self, dataset, task: str):
        """Data parallel: this process's share of the test set (gathered back whole before the metrics, so
        every process reports the one-process figures, each sample counted once)."""
        world_size = self.fabric.world_size
        if world_size == 1:
            return dataset
        shard = evaluation_shard(len(dataset), self.fabric.global_rank, world_size)
        log.info("Task %s: this process's 1/%d share: %d of %d samples.", task, world_size, len(shard), len(dataset))
        return dataset.select(shard.tolist())

    def _evaluate_tasks(self, model: nn.Module, name: Optional[str] = None) -> Dict:
        from transformers import DataCollatorWithPadding

        modelpool = modelpool_of(self)
        collate = DataCollatorWithPadding(resolve_tokenizer(self.tokenizer))
        loader_kwargs = {"batch_size": 64, "num_workers": 0, **dict(self.dataloader_kwargs or {})}
        loader_kwargs["shuffle"] = False
        report: Dict = {"name": name} if name is not None else {}
        for task, dataset_config in progress(self.test_datasets.items(), desc="Evaluating tasks"):
            classifier = self.fabric.to_device(task_classifier(modelpool, task, model))
            dataset = instantiate(dataset_config) if isinstance(dataset_config, DictConfig) else dataset_config
            dataset = dataset.select_columns([c for c in _MODEL_COLUMNS if c in dataset.column_names])
            shard = self._shard(dataset, task)
            logits, labels = [], []
            for batch in progress(DataLoader(shard, collate_fn=collate, **loader_kwargs), desc=task, nested=True):
                labels.append(batch.pop("labels"))
                batch = {k: v.to(self.fabric.device) for k, v in batch.items()}
                logits.append(classifier(**batch).logits.float().cpu())
            logits, labels = self._whole_test_set(torch.cat(logits), torch.cat(labels), len(dataset))
            self._save_task_predictions(task, logits, labels)
            report[task] = {**compute_metrics(task, logits, labels), "loss": float(loss_of(logits, labels))}
        report["average"] = average_scores(report)
        return report


class TaskAwareGPT2TextClassificationTaskPool(TaskAwareEvaluation, GPT2TextClassificationTaskPool):
    """FusionBench's GPT-2 GLUE task pool, switching per-task models and using their own heads."""

    def get_classifier(self, task_name: str, model: nn.Module) -> nn.Module:
        return task_classifier(modelpool_of(self), task_name, model)

    def evaluate(self, model: nn.Module, name: Optional[str] = None):
        return self._evaluate_task_aware(super().evaluate, model, name=name)
