"""The plugin's option ``init_from``: start the merging coefficients from another merge than Task Arithmetic's
(the paper's, the core's :class:`~.core.preparation.MergeStart`). Measured in docs/minilm_levers.md and
docs/generalization.md; a departure from the paper (docs/algorithm.md).

- ``lot``: the coefficients act on top of LOT Merging's closed-form merge, computed in the same pass over the
  fine-tuned models (each task's expert over a few of its adaptation inputs); they start at 0, the LOT merge,
  and may go negative (clamp range [-1, 1]).
- ``adamerging``: the coefficients start from those FusionBench's layer-wise AdaMerging saved
  (``adamerging_weights``, :mod:`.adamerging_start`).
"""

from __future__ import annotations

import os
from typing import Callable, ContextManager, Tuple

import torch
from torch import nn

from .adamerging_start import load_adamerging_weights, resolve_adamerging_weights
from .core.errors import TintingConfigError
from .core.merging import LayerWiseMerger
from .core.options import Option, is_path, one_of, or_none
from .core.preparation import MergeStart
from .core.run_state import MergeBase, RunPlan
from .lot_merging.expert_pass import observe_expert
from .lot_merging.options import LOT_START, make_solver

INIT_FROM = ("task_arithmetic", "lot", "adamerging")

START_OPTIONS = (
    Option(
        "init_from",
        "task_arithmetic",
        one_of(INIT_FROM),
        f"one of {list(INIT_FROM)}",
        "task_arithmetic (the paper) | lot: coefficients on top of the LOT-merged encoder | adamerging: "
        "coefficients start from FusionBench layer-wise AdaMerging's (adamerging_weights)",
        section="The plugin's starts: where the coefficients begin",
    ),
    Option(
        "adamerging_weights",
        None,
        or_none(is_path),
        "null or the path of AdaMerging's merging_weights.pt",
        "with init_from=adamerging: the merging_weights.pt FusionBench's layer-wise AdaMerging saved, or its log "
        "folder",
    ),
)


class LotStart(MergeStart):
    """The coefficients on top of LOT Merging's merge at LOT's defaults, its statistics gathered from each
    fine-tuned model as it passes (``init_from=lot``)."""

    auto_init_value = 0.0  # start at the LOT merge

    def __init__(self, *, seed: int, batch_size: int, num_workers, profile: Callable[[str], ContextManager]):
        self.seed, self.batch_size, self.num_workers, self.profile = seed, batch_size, num_workers, profile
        self.origin = f"lot(num_samples={LOT_START['num_samples']}, ridge={float(LOT_START['ridge'])}, seed={seed})"

    def begin(self, base: MergeBase, plan: RunPlan) -> None:
        self.family, self.device = plan.family, plan.device
        self.pretrained = dict(base.pretrained.named_parameters())
        self.solver = make_solver(
            base.pretrained,
            base.merger.names,
            ridge=LOT_START["ridge"],
            fallback_scale="auto",
            statistics_dtype="float64",
            device=plan.device,
        )

    def observe(self, task: str, finetuned: nn.Module) -> None:
        with self.profile("LOT statistics"):
            observe_expert(
                self.solver,
                self.family,
                task,
                self.pretrained,
                finetuned,
                num_samples=LOT_START["num_samples"],
                seed=self.seed,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                device=self.device,
            )

    def finish(self, merger: LayerWiseMerger) -> None:
        with self.profile("LOT solve"):
            merger.rebase(self.solver.task_vector())


class AdaMergingStart(MergeStart):
    """The coefficients of a FusionBench layer-wise AdaMerging run (``init_from=adamerging``)."""

    def __init__(self, path: str):
        self.path = resolve_adamerging_weights(path)

    def description(self) -> str:
        return f"adamerging({os.path.abspath(self.path)})"

    def begin(self, base: MergeBase, plan: RunPlan) -> None:
        tensors = plan.family.merged_parameter_names(base.pretrained)
        start = load_adamerging_weights(self.path, plan.tasks, base.merger.group_names, tensors)
        with torch.no_grad():
            base.merger.coefficients.copy_(start)


class StartsMixin:
    """Model Tinting with the option ``init_from`` (and ``adamerging_weights``)."""

    def _check_options(self) -> None:
        super()._check_options()
        if self.init_from == "adamerging":
            resolve_adamerging_weights(self.adamerging_weights)  # the file exists, before any model is loaded
            if self.init_values != "auto":
                raise TintingConfigError(
                    f"init_values={self.init_values!r} with init_from=adamerging: the initial coefficients are "
                    "AdaMerging's (adamerging_weights); leave init_values=auto."
                )

    def _clamp_range(self) -> Tuple[float, float]:
        """From LOT, a negative coefficient (away from expert k) is a real direction: [-1, 1]."""
        return (-1.0, 1.0) if self.init_from == "lot" else super()._clamp_range()

    def _start(self) -> MergeStart:
        if self.init_from == "lot":
            return LotStart(
                seed=self.run_seed,
                batch_size=self.preprocess_batch_size,
                num_workers=self.num_workers,
                profile=self.profile,
            )
        if self.init_from == "adamerging":
            return AdaMergingStart(self.adamerging_weights)
        return super()._start()
