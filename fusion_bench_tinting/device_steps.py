"""Steps that never wait on the host: the plugin's loop with the fused Adam (the default on CUDA).

The core's loop reads the host once a step, to skip a Model Tinting++ step on a batch whose every sample the
filter dropped and to stop on a NaN or infinite loss. Here both happen on the device: the step is cancelled
inside the fused kernel (the optimizer's ``found_inf``, as AMP's gradient scaler uses it), the cancelled steps
are counted on the device, and the first non-finite loss is remembered there until the loop next reads the
host (every ``log_every`` iterations, and at a checkpoint), when the run stops naming it (docs/speed.md).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .core.optimizer import non_finite_error


def step_unless(optimizer: torch.optim.Optimizer, cancel: Tensor) -> None:
    """An optimizer step that the fused kernel skips on the device when ``cancel`` is true (parameters,
    moments and step counts stay as they were, as if no step had been made)."""
    optimizer.found_inf = cancel.float()
    try:
        optimizer.step()
    finally:
        optimizer.found_inf = None


class DeviceStepTrainer:
    """A mixin of the core's loop: with the fused Adam, the ++ empty batch and the non-finite loss cancel the
    step on the device instead of being checked on the host (see module doc); without it, the core's checks."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: the first (task step * tasks + task) whose loss was not finite, -1 while none was
        self.non_finite_at = torch.full((), -1, dtype=torch.long, device=self.device)
        self._empty_batch: Optional[Tensor] = None

    def _begin_step(self) -> None:
        super()._begin_step()
        self._empty_batch = None

    def _filtered_loss(self, index: int, kept_losses: Tensor, kept: Tensor) -> Optional[Tensor]:
        """An empty batch gives a zero loss and a step that cancels its own update (the last loss stays)."""
        if not self.fused:
            return super()._filtered_loss(index, kept_losses, kept)
        self._empty_batch = kept == 0
        loss = kept_losses.sum() / kept.clamp(min=1)
        self._last_loss[index] = torch.where(self._empty_batch, self._last_loss[index], loss.detach())
        return loss

    def _cancel_flag(self, loss: Tensor, index: int) -> Optional[Tensor]:
        if not self.fused:
            return super()._cancel_flag(loss, index)
        if self.scaler is not None:  # the scaler skips a step whose gradients are not finite
            return self._empty_batch
        bad = self._non_finite(loss)
        where = torch.tensor(self.visits * len(self.tasks) + index, device=self.device)
        self.non_finite_at = torch.where((self.non_finite_at == -1) & bad, where, self.non_finite_at)
        return bad if self._empty_batch is None else bad | self._empty_batch

    def _step_unless(self, cancel: Optional[Tensor]) -> Optional[Tensor]:
        if not self.fused or cancel is None:
            return super()._step_unless(cancel)
        step_unless(self.optimizer, cancel)
        return cancel

    def _settle_empty_steps(self) -> None:
        """Stop if a step met a non-finite loss (one host read), else count the cancelled steps."""
        at = int(self.non_finite_at)
        if at >= 0:
            visit, index = divmod(at, len(self.tasks))
            raise non_finite_error(self.tasks[index].name, visit, len(self.tasks))
        super()._settle_empty_steps()
