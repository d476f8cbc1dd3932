"""Data-parallel adaptation over Lightning Fabric's processes (``fabric.devices=N``, DDP strategies): the
plugin's :class:`ProcessShare` in place of the core loop's ``SingleProcess``.

Every process draws the same global batch (same seed), computes the loss of its own slice normalised by the
*global* sample count, and the gradients are summed across processes before each step, so N processes make
the same updates as one process with the same batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import torch
from torch import Tensor, nn

from .core.errors import TintingConfigError

log = logging.getLogger(__name__)


@dataclass
class ProcessShare:
    """This process's share of every global batch among ``world_size`` data-parallel processes, and the sum of
    a tensor (the gradients, a loss) across them: what the loop needs of data parallelism."""

    rank: int = 0
    world_size: int = 1
    all_reduce_sum: Callable[[Tensor], Tensor] = lambda tensor: tensor

    def local(self, batch: Tensor) -> Tensor:
        """This process's slice of a global batch (strided, so every slice has nearly the same size)."""
        return batch if self.world_size == 1 else batch[self.rank :: self.world_size]

    def sum_gradients(self, params: List[nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the processes in one collective call."""
        if self.world_size == 1:
            return
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        flat = self.all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in with_grad]))
        for p, piece in zip(with_grad, flat.split([p.numel() for p in with_grad])):
            p.grad.copy_(piece.view_as(p.grad))


def data_parallel(fabric: Any, batch_size: int) -> ProcessShare:
    """Data-parallel adaptation over Fabric's processes (``fabric.devices=N``, DDP strategies): each
    process takes a slice of every batch and the gradients are summed across them."""
    if fabric.world_size == 1:
        return ProcessShare()
    if batch_size < fabric.world_size:
        raise TintingConfigError(
            f"batch_size={batch_size} is smaller than the {fabric.world_size} data-parallel processes: "
            "every process needs at least one sample of each batch."
        )
    log.info("Data-parallel adaptation over %d processes (rank %d).", fabric.world_size, fabric.global_rank)
    return ProcessShare(
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        all_reduce_sum=lambda tensor: fabric.all_reduce(tensor, reduce_op="sum"),
    )


class DataParallelMixin:
    """Model Tinting whose loop shares each batch among Fabric's processes."""

    def _trainer_settings(self) -> Dict[str, Any]:
        return {**super()._trainer_settings(), "data_parallel": data_parallel(self.fabric, self.batch_size)}
