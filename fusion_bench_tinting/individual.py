"""The individual fine-tuned models as one FusionBench method: the per-task upper reference.

``run`` returns a FusionBench ``ModulatedModel`` whose ``set_task(task)`` loads task's fine-tuned
encoder weights into a shared encoder, so a task-aware task pool evaluates every fine-tuned model on
its own task in one run (``fusion_bench method=individual modelpool=<suite> taskpool=<suite>``).
The fine-tuned weights wait on the CPU.
"""

from __future__ import annotations

from typing import Dict

import torch
from fusion_bench import BaseAlgorithm, BaseModelPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin
from fusion_bench.models.modulator.base import ModulatedModel, TaskModulator
from torch import Tensor

from . import families  # noqa: F401  (the plugin's model families join the core's table)
from .core.families import PRETRAINED, family_for
from .exits import one_line_config_errors
from .suites import SuiteTaskPoolMixin


class WeightsModulator(TaskModulator):
    """Swaps a whole set of encoder weights in (and the previous ones back out)."""

    def __init__(self, weights: Dict[str, Tensor]):
        super().__init__()
        self.weights = {name: value.detach().cpu() for name, value in weights.items()}
        self._saved: Dict[str, Tensor] = {}

    @torch.no_grad()
    def apply(self, modulated_model: ModulatedModel) -> None:
        params = dict(modulated_model.backbone.named_parameters())
        for name, value in self.weights.items():
            self._saved[name] = params[name].detach().clone()
            params[name].copy_(value.to(params[name]))

    @torch.no_grad()
    def remove(self, modulated_model: ModulatedModel) -> None:
        params = dict(modulated_model.backbone.named_parameters())
        for name, value in self._saved.items():
            params[name].copy_(value)
        self._saved.clear()
        modulated_model._current_task = None


@auto_register_config
class IndividualModels(SuiteTaskPoolMixin, LightningFabricMixin, BaseAlgorithm):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def run(self, modelpool: BaseModelPool) -> ModulatedModel:
        with one_line_config_errors():
            return self._individual_models(modelpool)

    def _individual_models(self, modelpool: BaseModelPool) -> ModulatedModel:
        family = family_for(modelpool, self.fabric)
        backbone = family.load_encoder(PRETRAINED)
        modulators = {}
        for task in family.task_names():
            encoder = family.load_encoder(task)
            modulators[task] = WeightsModulator(dict(encoder.named_parameters()))
            del encoder
        model = ModulatedModel(backbone, modulators)
        model.report_extras = {"method": "individual"}
        return model
