"""``init_from=adamerging``: start the coefficients from the ones FusionBench's layer-wise AdaMerging learned.

FusionBench's layer-wise AdaMerging (``method=adamerging/clip`` with ``method.save_merging_weights=...``,
``adamerging/layer_wise_gpt2`` with ``method.merging_weights_save_path=...``) saves its ``merge_weight`` with
``torch.save``: a (num_models, num_parameter_tensors) tensor, rows in the model pool's model order, columns in
the pretrained encoder's ``named_parameters`` order, values before its [0, 1] clamp. That is our layer-wise
layout (one coefficient per tensor), so the tensor becomes the initial coefficients as is
(the reference code's ``adastart``). Where this run keeps some encoder tensors per task instead of merging them
(BERT's pooler with ``head_projection=own``), their columns are left out.

Our runs write their coefficients in the same layout (the core's ``results.save_merging_weights``), so a run
of ours, e.g. one with AdaMerging's entropy objective on a family FusionBench has no AdaMerging for, can start
another.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .core.errors import TintingConfigError
from .core.results import ADAMERGING_FILE


def resolve_adamerging_weights(path: str) -> str:
    """The weights file: ``path`` itself, or ``merging_weights.pt`` in an AdaMerging run's log folder."""
    if path is None:
        raise TintingConfigError(
            "init_from=adamerging needs method.adamerging_weights: the merging_weights.pt that FusionBench's "
            "layer-wise AdaMerging saved (method.save_merging_weights=merging_weights.pt), or its run's log folder."
        )
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        path = os.path.join(path, ADAMERGING_FILE)
    if not os.path.isfile(path):
        raise TintingConfigError(
            f"adamerging_weights={path!r}: no such file (expected FusionBench's {ADAMERGING_FILE})."
        )
    return path


def _columns_kept(
    num_columns: int, coefficient_groups: Sequence[str], encoder_tensors: Sequence[str]
) -> Optional[List[int]]:
    """The columns of a file that covers every encoder tensor, for a run that merges only some of them."""
    if num_columns == len(coefficient_groups) or num_columns != len(encoder_tensors):
        return None
    position = {name: i for i, name in enumerate(encoder_tensors)}
    return [position[group] for group in coefficient_groups] if all(g in position for g in coefficient_groups) else None


def load_adamerging_weights(
    path: str, task_names: List[str], coefficient_groups: List[str], encoder_tensors: Sequence[str] = ()
) -> Tensor:
    """The saved (tasks x parameter tensors) coefficients, checked against this pool and layout.
    ``encoder_tensors``: every parameter tensor of the encoder in order, the file's columns when it covers
    tensors this run does not merge."""
    path = resolve_adamerging_weights(path)
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file, or not a torch tensor file
        raise TintingConfigError(f"adamerging_weights={path!r} is not a readable torch tensor file: {error}") from error
    if not isinstance(weights, Tensor) or weights.dim() != 2:
        found = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise TintingConfigError(f"adamerging_weights={path!r}: expected a (tasks, layers) tensor, found {found}.")
    columns = _columns_kept(weights.shape[1], coefficient_groups, encoder_tensors)
    if columns is not None:
        weights = weights[:, columns]
    expected = (len(task_names), len(coefficient_groups))
    if tuple(weights.shape) != expected:
        raise TintingConfigError(
            f"adamerging_weights={path!r} holds {weights.shape[0]} tasks x {weights.shape[1]} layers, but this run "
            f"merges {expected[0]} tasks ({', '.join(task_names)}) x {expected[1]} layers: the weights come from "
            "another model pool, task list or architecture."
        )
    if not torch.isfinite(weights).all():
        raise TintingConfigError(f"adamerging_weights={path!r} holds non-finite values.")
    return weights.float()
