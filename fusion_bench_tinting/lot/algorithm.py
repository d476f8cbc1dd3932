"""LOT Merging as a FusionBench method: ``fusion_bench method=lot_merging modelpool=<suite>``.

Each expert sees ``num_samples`` of its task's unlabelled test inputs once; the merged encoder's
linear and LayerNorm layers come from the closed form of :mod:`.solver`, the remaining tensors from
the mean of the task vectors. Each task keeps its own head (the zero-shot head for CLIP, the
fine-tuned classifier for sequence classification), so the result is evaluated per task like a
tinting result. No training loop.
"""

from __future__ import annotations

import time
from typing import Dict, Union

import torch

from fusion_bench import BaseAlgorithm, BaseModelPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin
from fusion_bench.utils.pylogger import get_rankzero_logger

from ..console import progress, quiet_run, show_profile
from ..caching import library_versions
from ..errors import one_line_config_errors, reports_config_errors
from ..families import PRETRAINED, ModelFamily, family_for
from ..families.base import SPLITS
from ..merging import check_same_parameters
from ..options import check_known, check_values, int_at_least, is_int, is_number, number_at_least, one_of, or_auto
from ..suites import SuiteTaskPoolMixin
from ..tinted_model import TintedModel, TintModulator
from .expert_pass import observe_expert
from .solver import LOTSolver

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only

STATISTICS_DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: LOT Merging's options and what each allows, checked at construction (see :mod:`..options`)
LOT_RULES = {
    "num_samples": (int_at_least(1), "an integer >= 1 (the paper: 16-64)"),
    "ridge": (number_at_least(0), "a number >= 0 (0: pseudo-inverse, the paper's Eq. 9)"),
    "fallback_scale": (or_auto(is_number), "'auto' (the mean of the task vectors) or a number"),
    "statistics_dtype": (one_of(STATISTICS_DTYPES), f"one of {list(STATISTICS_DTYPES)}"),
    "batch_size": (int_at_least(1), "an integer >= 1"),
    "num_workers": (int_at_least(0), "an integer >= 0"),
    "seed": (is_int, "an integer"),
    "adaptation_data": (one_of(SPLITS), f"one of {list(SPLITS)}: the model pool's datasets the samples come from"),
}


def make_solver(encoder, merged_names, *, ridge, fallback_scale, statistics_dtype: str, device) -> LOTSolver:
    return LOTSolver(
        encoder,
        merged_names,
        ridge=float(ridge),
        fallback_scale=None if fallback_scale == "auto" else float(fallback_scale),
        statistics_dtype=STATISTICS_DTYPES[statistics_dtype],
        device=device,
    )


@auto_register_config
class LOTMergingAlgorithm(SuiteTaskPoolMixin, LightningFabricMixin, SimpleProfilerMixin, BaseAlgorithm):
    """LOT Merging.

    Args:
        num_samples: unlabelled test samples per task whose features are gathered (the paper: 16-64).
        ridge: relative ridge ``lambda = ridge * mean(diag(sum_k G_k))`` added to each system; 0 uses the
            pseudo-inverse.
        fallback_scale: scale of the summed task vectors for tensors without a closed form
            (embeddings, ...); ``auto`` = 1/K, the mean.
        statistics_dtype: dtype of the accumulated Gram matrices and of the solve.
        batch_size, num_workers: the statistics pass's batches and data loading.
        seed: picks the samples.
        adaptation_data: the model pool's datasets the samples come from (``test``: the scored inputs, as the
            paper; ``val`` or ``train``: other inputs).
    """

    def __init__(
        self,
        num_samples: int = 64,
        ridge: float = 1e-4,
        fallback_scale: Union[float, str] = "auto",
        statistics_dtype: str = "float64",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 42,
        adaptation_data: str = "test",
        **kwargs,
    ):
        with one_line_config_errors():  # before any model is loaded
            check_known(kwargs, LOT_RULES, "config/method/lot_merging.yaml")
        super().__init__(**kwargs)
        with one_line_config_errors():
            check_values({name: getattr(self, name) for name in LOT_RULES}, LOT_RULES)

    @reports_config_errors
    def run(self, modelpool: BaseModelPool) -> TintedModel:
        family = family_for(modelpool, self.fabric, adaptation_split=self.adaptation_data)
        with quiet_run(family.expected_load_report):
            return self._merge(family)

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
            pretrained, merged_names, ridge=self.ridge, fallback_scale=self.fallback_scale,
            statistics_dtype=self.statistics_dtype, device=device,
        )
        heads = {}
        for task in progress(tasks, desc="LOT feature statistics"):
            with self.profile("load fine-tuned"):
                expert = family.load_encoder(task)
                heads[task] = family.load_head(task)
            check_same_parameters(pretrained_params, {n: p for n, p in expert.named_parameters() if n in pretrained_params}, task)
            with self.profile("statistics"):
                observe_expert(
                    solver, family, task, pretrained_params, expert, num_samples=self.num_samples, seed=self.seed,
                    batch_size=self.batch_size, num_workers=self.num_workers, device=device,
                )
            del expert
        with self.profile("closed-form solve"):
            task_vector = solver.task_vector()
        load_offset(pretrained, pretrained_params, task_vector)
        show_profile(self, self.log_dir)
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
