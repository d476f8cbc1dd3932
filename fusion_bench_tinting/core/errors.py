"""Errors raised for configuration mistakes and bad inputs, each with a one-line message that names the
option, task or file and the fix, and the checks that raise them where the bad value enters a run: non-finite
weights, teacher outputs or losses (one NaN in one fine-tuned weight makes every merged tensor it touches NaN,
with nothing said), and a run too big for the accelerator (before anything large is allocated, not as an OOM
trace minutes later). They are ordinary exceptions; the plugin's command line turns them into that one line
and exit status 2 (``fusion_bench_tinting.exits``)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import Tensor

GIB = 2**30


class TintingConfigError(ValueError):
    """A model pool, task pool or method option that Model Tinting cannot work with."""

    #: how the one-line message starts under the ``fusion_bench`` command
    label = "Configuration error"


class NonFiniteError(TintingConfigError):
    """A weight, teacher output or loss that is NaN or infinite: the run stops where it enters."""

    label = "Non-finite values"


class ReadError(TintingConfigError):
    """A model, head or dataset that could not be read: ``what`` it was and the library's ``reason``."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what} could not be read: {reason}")
        self.what, self.reason = what, reason


class SaveError(TintingConfigError):
    """A result file that could not be written at the end of a run (a full or read-only log folder)."""

    label = "Save failed"


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
