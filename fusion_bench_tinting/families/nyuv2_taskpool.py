"""Task-aware evaluation for FusionBench's NYUv2 task pool.

FusionBench's ``NYUv2TaskPool`` evaluates one encoder with the fine-tuned decoders of the model pool, all
tasks in one pass. A Model Tinting result has its own (tinted) decoder per task, and with a tinted encoder
block its encoder differs per task too, so this subclass evaluates each task on its own: the model switched
to the task (``set_task``), the task's tinted decoder (else the fine-tuned one), FusionBench's own
Lightning module and metrics. Other models (FusionBench's merging baselines) are evaluated as FusionBench does.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from fusion_bench.taskpool.nyuv2_taskpool import NYUv2TaskPool
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader


class TaskAwareNYUv2TaskPool(NYUv2TaskPool):
    """``NYUv2TaskPool`` that evaluates each task with the model's own decoder for it (see module doc). Built
    from FusionBench's config (``type: NYUv2TaskPool``) as keyword arguments or as one config."""

    def __init__(self, taskpool_config: Optional[DictConfig] = None, **config: Any):
        super().__init__(taskpool_config if taskpool_config is not None else OmegaConf.create(config))

    @property
    def trainer(self):
        """FusionBench's validation trainer, writing its Lightning logs into the run's log folder (FusionBench's
        own trainer writes ``lightning_logs/`` into the working folder)."""
        if self._trainer is None:
            import lightning as L

            log_dir = getattr(getattr(self, "_program", None), "log_dir", None)
            self._trainer = L.Trainer(devices=1, default_root_dir=log_dir)
        return self._trainer

    def evaluate(self, model: nn.Module) -> Dict[str, Any]:
        if not callable(getattr(model, "task_head", None)):
            return super().evaluate(model)
        from fusion_bench.models.nyuv2.lightning_module import NYUv2MTLModule

        _, val_dataset = self.load_datasets()
        loader = DataLoader(
            val_dataset, batch_size=self.config.batch_size, shuffle=False, num_workers=self.config.num_workers
        )
        report: Dict[str, Any] = {}
        for task in self.config.tasks:
            model.set_task(task)
            head = model.task_head(task)
            if head is None:  # a tinted encoder block: the task's fine-tuned decoder
                head = self._program.modelpool.load_model(task, encoder_only=False).decoders[task]
            decoders = nn.ModuleDict({task: head})
            module = NYUv2MTLModule(model, decoders, tasks=[task], task_weights=[1])
            results = self.trainer.validate(module, loader)
            report.update(results[0] if isinstance(results, list) and len(results) == 1 else results)
        extras = getattr(model, "report_extras", None)
        if extras:
            report["adaptation"] = extras
        return report
