"""LOT Merging's options, declared once (:class:`~..options.Options`): the LOT Merging method's constructor, checks
and YAML come from them, and Model Tinting's ``init_from=lot`` starts from LOT's merge at their defaults."""

from __future__ import annotations

import torch

from ..core.families.base import SPLITS
from ..core.options import Option, Options, int_at_least, is_int, is_number, number_at_least, one_of, or_auto
from .solver import LOTSolver

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
