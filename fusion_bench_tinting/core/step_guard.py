"""The adaptation's optimizer, steps that can be cancelled on the device, and a NaN check that costs no host
sync per step.

Model Tinting++ must not step on a batch whose every sample it dropped, and no step may use a NaN or
infinite loss. On the host that is one ``bool(...)`` per step; with the fused Adam (the default on CUDA) the
step is cancelled inside the kernel instead (the optimizer's ``found_inf``, as AMP's gradient scaler does),
the cancelled steps are counted on the device, and the first non-finite loss is remembered there until the
loop next reads the host (:meth:`StepGuard.settle`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .errors import NonFiniteError
from .fabric_glue import ProcessShare
from .merging import LayerWiseMerger

if TYPE_CHECKING:
    from .adaptation import AdaptationOptions
    from .run_state import TaskState


def step_unless(optimizer: torch.optim.Optimizer, cancel: Tensor) -> None:
    """An optimizer step that the fused kernel skips on the device when ``cancel`` is true (parameters,
    moments and step counts stay as they were, as if no step had been made)."""
    optimizer.found_inf = cancel.float()
    try:
        optimizer.step()
    finally:
        optimizer.found_inf = None


class StepGuard:
    """Makes the optimizer steps of one adaptation and keeps the device-side record of the cancelled ones."""

    def __init__(
        self,
        task_names: Sequence[str],
        device: torch.device,
        fused: bool,
        scaler: Optional[torch.amp.GradScaler],
        share: ProcessShare,
    ):
        self.task_names = list(task_names)
        self.device, self.fused, self.scaler, self.share = device, fused, scaler, share
        #: steps cancelled on the device (++ batches with no kept sample, fp16 overflows) not yet counted
        self.cancelled = torch.zeros((), dtype=torch.long, device=device)
        #: fused steps: the first (task step * tasks + task) whose loss was not finite, -1 while none was
        self.non_finite_at = torch.full((), -1, dtype=torch.long, device=device)

    def flag_non_finite(self, loss: Tensor, visit: int, index: int, empty: Optional[Tensor]) -> Optional[Tensor]:
        """Stop on a NaN or infinite loss (task ``index``) before it reaches a parameter.
        Under fp16 loss scaling the scaler skips such steps. A fused step is cancelled on the device instead,
        and the run stops at the next :meth:`settle`. Returns the flag of the steps to cancel."""
        if self.scaler is not None:
            return empty
        bad = ~torch.isfinite(loss.detach())
        if self.share.world_size > 1:  # every process must stop at the same step
            bad = self.share.all_reduce_sum(bad.float()) > 0
        if not self.fused:
            if bool(bad):
                raise self.error(visit, index)
            return empty
        where = torch.tensor(visit * len(self.task_names) + index, device=self.device)
        self.non_finite_at = torch.where((self.non_finite_at == -1) & bad, where, self.non_finite_at)
        return bad if empty is None else bad | empty

    def error(self, visit: int, index: int) -> NonFiniteError:
        return NonFiniteError(
            f"the loss of task {self.task_names[index]!r} was NaN or infinite at step {visit + 1} "
            f"(iteration {visit // len(self.task_names) + 1}): "
            "the adaptation stopped before updating any parameter with it. Lower method.lr, or check the task's "
            "inputs and teacher outputs."
        )

    def step(
        self, optimizer: torch.optim.Optimizer, params: List[nn.Parameter], cancel: Optional[Tensor]
    ) -> Optional[Tensor]:
        """The optimizer step; returns a device flag that is true when it was cancelled (``cancel``, or fp16
        gradients that overflowed), or None when it was certainly made."""
        if self.scaler is not None:
            return self._scaled_step(optimizer, params, cancel)
        if cancel is None:
            optimizer.step()
            return None
        step_unless(optimizer, cancel)
        return cancel

    def _scaled_step(
        self, optimizer: torch.optim.Optimizer, params: List[nn.Parameter], empty: Optional[Tensor]
    ) -> Tensor:
        """The step under loss scaling: gradients unscaled in place, the step cancelled where they are not
        finite (or the ++ batch was empty), the scale updated from the overflow alone."""
        self.scaler.unscale_(optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        finite = (
            torch.stack([g.isfinite().all() for g in grads]).all()
            if grads
            else torch.ones((), dtype=torch.bool, device=self.device)
        )
        cancelled = ~finite if empty is None else (~finite | empty)
        if self.fused:
            step_unless(optimizer, cancelled)
        elif not bool(cancelled):  # host check: only the fused kernel can cancel a step on the device
            optimizer.step()
        self.scaler.update()
        return cancelled

    def settle(self) -> int:
        """One host read: stop if a fused step met a non-finite loss; else the number of steps cancelled since
        the last read (then zero)."""
        at = int(self.non_finite_at)
        if at >= 0:
            raise self.error(*divmod(at, len(self.task_names)))
        cancelled = int(self.cancelled)
        if cancelled:
            self.cancelled.zero_()
        return cancelled


def make_optimizer(
    merger: LayerWiseMerger, tasks: List["TaskState"], options: "AdaptationOptions", fused: bool
) -> Tuple[torch.optim.Adam, List[nn.Parameter]]:
    """Adam, defaults, no weight decay, one parameter group (coefficients and every tinted layer) as the
    reference code, and the parameters it trains. The fused implementation (default on CUDA) makes the update
    a couple of kernels instead of a few per tensor."""
    merger.coefficients.requires_grad_(options.train_coefficients)
    coefficients = [merger.coefficients] if options.train_coefficients else []
    tinted: List[nn.Parameter] = []
    for task in tasks:
        for p in task.head_encoder.values():  # trained below only when they belong to the tinted layer
            p.requires_grad_(False)
        for p in task.tinted_parameters():
            p.requires_grad_(options.train_tinted_layer)
            if options.train_tinted_layer:
                tinted.append(p)
    if not coefficients + tinted:
        raise ValueError("Nothing to train: enable train_coefficients and/or train_tinted_layer.")
    trained = coefficients + tinted
    optimizer = torch.optim.Adam(
        trained, lr=options.lr, betas=(0.9, 0.999), weight_decay=0.0, **({"fused": True} if fused else {})
    )
    return optimizer, trained
