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

from ..caching import library_versions
from ..console import progress, quiet_run, show_profile
from ..errors import one_line_config_errors, reports_config_errors
from ..families import PRETRAINED, ModelFamily, family_for
from ..families.base import SPLITS
from ..merging import check_same_parameters
from ..options import Option, Options, int_at_least, is_int, is_number, number_at_least, one_of, or_auto
from ..suites import SuiteTaskPoolMixin
from ..tinted_model import TintedModel, TintModulator
from .expert_pass import observe_expert
from .solver import LOTSolver

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only

STATISTICS_DTYPES = {"float32": torch.float32, "float64": torch.float64}


LOT_OPTIONS = Options(
    "config/method/lot_merging.yaml",
    [
        Option(
            "num_samples",
            64,
            int_at_least(1),
            "an integer >= 1 (the paper: 16-64)",
            "unlabelled samples per task whose layer inputs are gathered (the paper uses 16-64)",
        ),
        Option(
            "ridge",
            1e-4,
            number_at_least(0),
            "a number >= 0 (0: pseudo-inverse, the paper's Eq. 9)",
            "relative ridge added to each system (lambda = ridge * mean diagonal); 0: pseudo-inverse",
        ),
        Option(
            "fallback_scale",
            "auto",
            or_auto(is_number),
            "'auto' (the mean of the task vectors) or a number",
            "scale of the summed task vectors for tensors without a closed form (auto: 1/K, the mean)",
        ),
        Option(
            "statistics_dtype",
            "float64",
            one_of(STATISTICS_DTYPES),
            f"one of {list(STATISTICS_DTYPES)}",
            "dtype of the accumulated statistics and of the solve",
        ),
        Option(
            "batch_size",
            32,
            int_at_least(1),
            "an integer >= 1",
            "batch size of the statistics pass",
            changes_result=False,
        ),
        Option(
            "num_workers",
            0,
            int_at_least(0),
            "an integer >= 0",
            "data-loading workers of the statistics pass",
            changes_result=False,
        ),
        Option("seed", 42, is_int, "an integer", "picks the samples"),
        Option(
            "adaptation_data",
            "test",
            one_of(SPLITS),
            f"one of {list(SPLITS)}: the model pool's datasets the samples come from",
            "the model pool's datasets the samples come from: test (the paper's: the scored inputs) | val | train",
        ),
    ],
)
#: LOT's options where Model Tinting starts from its merge (``init_from=lot``)
LOT_START = LOT_OPTIONS.defaults()


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
    """LOT Merging (arXiv 2505.23859): for each merged layer, the weights that minimise the drift between the
    experts' features and the merged model's on a few unlabelled samples per task, in closed form. Its options
    are declared in :data:`LOT_OPTIONS`."""

    def __init__(self, **options):
        with one_line_config_errors():  # before any model is loaded
            LOT_OPTIONS.refuse_unknown(options)
        super().__init__(**{k: v for k, v in options.items() if k not in LOT_OPTIONS.names})
        with one_line_config_errors():
            LOT_OPTIONS.check({name: getattr(self, name) for name in LOT_OPTIONS.names})

    __init__.__signature__ = LOT_OPTIONS.signature()

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
