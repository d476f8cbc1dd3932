"""Checks, before anything large is allocated on the accelerator, that a run fits in its memory, so that
a run too big for the device stops at once with the numbers and what to change, not with an OOM trace
minutes later."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import TintingConfigError

GIB = 2**30


def merge_bytes(
    num_parameters: int, num_tasks: int, task_vector_dtype: torch.dtype, dtype: torch.dtype = torch.float32
) -> int:
    """Device memory the merge needs at least: K task vectors, plus the base, the encoder's own weights,
    one merged copy and its gradient buffer in ``dtype`` (activations come on top)."""
    narrow = torch.empty((), dtype=task_vector_dtype).element_size()
    wide = torch.empty((), dtype=dtype).element_size()
    return num_parameters * (num_tasks * narrow + 4 * wide)


def free_bytes(device: torch.device) -> int:
    return torch.cuda.mem_get_info(device)[0]


def check_fits(device: torch.device, required: int, what: str, advice: str) -> None:
    """Raise :class:`TintingConfigError` when ``required`` bytes exceed the free memory of a CUDA device."""
    if device.type != "cuda":
        return
    free = free_bytes(device)
    if required > free:
        raise TintingConfigError(
            f"{what} needs at least {required / GIB:.1f} GiB on {device}, which has {free / GIB:.1f} GiB free. {advice}"
        )


@contextlib.contextmanager
def explain_out_of_memory(what: str, advice: str) -> Iterator[None]:
    """Turn the device running out of memory during ``what`` into a :class:`TintingConfigError` that says
    what ran out and what to change, instead of a trace from deep inside torch (activations are not
    in :func:`check_fits`'s estimate: they depend on the model, batch and precision)."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        raise TintingConfigError(f"{what} ran out of device memory ({first_line}). {advice}") from None
