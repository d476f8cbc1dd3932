"""What the adaptation loop takes from Lightning Fabric: its gradient scaler under fp16 autocast, and the
interface of data parallelism (one process here). The loop calls backward and its own fused optimizer step
(one task per step), so it uses these pieces rather than ``fabric.backward``."""

from __future__ import annotations

import time
from typing import Any, List, Optional

import torch
from torch import Tensor, nn


class SingleProcess:
    """The loop's view of data parallelism when it runs in one process: its batch is the global batch and a sum
    over processes is the tensor itself (the plugin's ``ProcessShare`` splits batches over Fabric's processes)."""

    rank, world_size = 0, 1

    def local(self, batch: Tensor) -> Tensor:
        return batch

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        return tensor

    def sum_gradients(self, params: List[nn.Parameter]) -> None:
        pass


def seconds_since(start: float, device: torch.device) -> float:
    """Seconds since ``start`` with the device's queued work done (one synchronisation per run)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def grad_scaler(fabric: Any) -> Optional[torch.amp.GradScaler]:
    """Fabric's gradient scaler under fp16 autocast (``fabric.precision=16-mixed``, as the SyMerge version of
    the method trains). None for other precisions (bf16 and fp32 need no scaling)."""
    precision = fabric.strategy.precision
    return getattr(precision, "scaler", None) if getattr(precision, "precision", None) == "16-mixed" else None
