"""Non-finite values (NaN, infinity) caught where they enter a run.

One NaN in one fine-tuned weight makes every merged tensor it touches NaN: every task then scores chance
and the saved weights are all NaN, with nothing said. Task vectors, heads, teacher outputs, saved weights
and losses are checked where they are read or made, and a failure names what and where.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .errors import NonFiniteError


def first_non_finite(tensors: Mapping[str, Tensor]) -> str:
    """The name of the first floating-point tensor holding a NaN or an infinity, or '' when all are finite."""
    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return ""


def check_finite(tensors: Mapping[str, Tensor], what: str) -> None:
    """Refuse ``tensors`` (of ``what``, e.g. "the model of task 'mnist' (path)") if one holds NaN or infinity."""
    bad = first_non_finite(tensors)
    if bad:
        values = tensors[bad].detach()
        nans, infs = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
        raise NonFiniteError(
            f"{what}: tensor {bad!r} holds {nans} NaN and {infs} infinite value(s) of {values.numel()}; "
            "a merge or an adaptation with it would be NaN. Replace the file with a finite one."
        )
