"""The adaptation's optimizer and what a step needs around it: Adam as the reference code makes it, the check that
fp16 gradients did not overflow, and the error of a non-finite loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

import torch
from torch import Tensor, nn

from .errors import NonFiniteError
from .merging import LayerWiseMerger

if TYPE_CHECKING:
    from .adaptation import AdaptationOptions
    from .run_state import TaskState


def gradients_finite(params: List[nn.Parameter], device: torch.device) -> Tensor:
    """A device flag: every gradient of ``params`` is finite (fp16 loss scaling skips a step where one is not)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=device)
    return torch.stack([g.isfinite().all() for g in grads]).all()


def non_finite_error(task: str, visit: int, num_tasks: int) -> NonFiniteError:
    """The error of a NaN or infinite loss of ``task`` at task step ``visit`` (from 0)."""
    return NonFiniteError(
        f"the loss of task {task!r} was NaN or infinite at step {visit + 1} "
        f"(iteration {visit // num_tasks + 1}): "
        "the adaptation stopped before updating any parameter with it. Lower method.lr, or check the task's "
        "inputs and teacher outputs."
    )


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
