"""LOT Merging as a FusionBench method: ``fusion_bench method=lot_merging modelpool=<suite>``.

Each expert sees ``num_samples`` of its task's unlabelled test inputs once; the merged encoder's
linear and LayerNorm layers come from the closed form of :mod:`.solver`, the remaining tensors from
the mean of the task vectors. Each task keeps its own head (the zero-shot head for CLIP, the
fine-tuned classifier for sequence classification), so the result is evaluated per task like a
tinting result. No training loop.
"""

from __future__ import annotations

import time
from typing import Dict

import torch
from fusion_bench import BaseAlgorithm, BaseModelPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin
from fusion_bench.utils.pylogger import get_rankzero_logger

from ..core.console import progress
from ..core.families import PRETRAINED, ModelFamily, family_for
from ..core.merging import check_same_parameters
from ..core.results import library_versions
from ..core.tinted_model import TintedModel, TintModulator
from .expert_pass import observe_expert
from .options import LOT_OPTIONS, make_solver

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only


@auto_register_config
class LOTMergingAlgorithm(LightningFabricMixin, SimpleProfilerMixin, BaseAlgorithm):
    """LOT Merging (arXiv 2505.23859): for each merged layer, the weights that minimise the drift between the
    experts' features and the merged model's on a few unlabelled samples per task, in closed form. Its options
    are declared in :data:`LOT_OPTIONS`."""

    def __init__(self, **options):
        LOT_OPTIONS.refuse_unknown(options)  # before any model is loaded
        super().__init__(**{k: v for k, v in options.items() if k not in LOT_OPTIONS.names})
        LOT_OPTIONS.check({name: getattr(self, name) for name in LOT_OPTIONS.names})

    __init__.__signature__ = LOT_OPTIONS.signature()

    def run(self, modelpool: BaseModelPool) -> TintedModel:
        return self._merge(family_for(modelpool, self.fabric, adaptation_split=self.adaptation_data))

    def _merge(self, family: ModelFamily) -> TintedModel:
        device = torch.device(self.fabric.device)
        tasks = family.task_names()
        for task in tasks:
            family.validate_task(task)
        start = time.perf_counter()
        with self.profile("load pretrained"):
            pretrained = family.load_encoder(PRETRAINED).to(device)
        merged_names = family.merged_parameter_names(pretrained)
        pretrained_params = {n: p.detach().clone() for n, p in pretrained.named_parameters() if n in set(merged_names)}
        solver = make_solver(
            pretrained,
            merged_names,
            ridge=self.ridge,
            fallback_scale=self.fallback_scale,
            statistics_dtype=self.statistics_dtype,
            device=device,
        )
        heads = {}
        for task in progress(tasks, desc="LOT feature statistics"):
            with self.profile("load fine-tuned"):
                expert = family.load_encoder(task)
                heads[task] = family.load_head(task)
            check_same_parameters(
                pretrained_params, {n: p for n, p in expert.named_parameters() if n in pretrained_params}, task
            )
            with self.profile("statistics"):
                observe_expert(
                    solver,
                    family,
                    task,
                    pretrained_params,
                    expert,
                    num_samples=self.num_samples,
                    seed=self.seed,
                    batch_size=self.batch_size,
                    num_workers=self.num_workers,
                    device=device,
                )
            del expert
        with self.profile("closed-form solve"):
            task_vector = solver.task_vector()
        load_offset(pretrained, pretrained_params, task_vector)
        self.print_profile_summary()
        report = {
            "method": "lot_merging",
            "num_samples": int(self.num_samples),
            "ridge": float(self.ridge),
            "merge_time_s": round(time.perf_counter() - start, 3),
            "seed": int(self.seed),
            "adaptation_data": {"split": self.adaptation_data, "transductive": self.adaptation_data == "test"},
            "versions": library_versions(),
            **solver.summary(),
        }
        modulators = {task: TintModulator(head=heads[task].eval().requires_grad_(False)) for task in tasks}
        return TintedModel(pretrained.eval(), modulators, report)


@torch.no_grad()
def load_offset(module: torch.nn.Module, base: Dict[str, torch.Tensor], offset: Dict[str, torch.Tensor]) -> None:
    """Set ``module``'s parameters to ``base + offset`` (for the tensors in ``offset``)."""
    params = dict(module.named_parameters())
    for name, value in offset.items():
        params[name].copy_((base[name].float() + value.to(base[name].device)).to(params[name].dtype))
