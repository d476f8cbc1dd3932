"""What the adaptation loop logs every ``log_every`` iterations, accumulated on the device between reads.

The loop must not synchronise with the host at every step, so the window's loss, its count of steps made and
each task's coefficient-gradient norms are device tensors, read once per window.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor


class MetricWindow:
    """The mean loss of the window's optimizer steps and, per task, the mean norm of its steps' coefficient
    gradients (``coefficients/grad_norm/<task>``: how much signal each task gives the coefficients)."""

    def __init__(self, num_tasks: int, device: torch.device):
        self.device = device
        self.grad_norm = torch.zeros(num_tasks, device=device)
        self.grad_steps = torch.zeros(num_tasks, device=device)
        self.reset_loss()

    def reset_loss(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.count = torch.zeros((), device=self.device)

    def add_step(self, loss: Tensor, made: Optional[Tensor] = None) -> None:
        """A step's loss; ``made``: a device flag, false when the step was cancelled (None: it was made)."""
        self.loss += loss.detach()
        self.count += 1 if made is None else made

    def add_coefficient_gradient(self, index: int, grad: Optional[Tensor]) -> None:
        if grad is not None:
            self.grad_norm[index] += grad.norm()
            self.grad_steps[index] += 1

    def coefficient_metrics(self, coefficients: Tensor, tasks: Sequence[str], with_gradients: bool) -> Dict[str, float]:
        """Per task the mean of its (clamped) ``coefficients`` and its mean gradient norm over the window; the
        mean, min and max of all of them (one host read for all). Starts a new gradient window."""
        rows = torch.stack([coefficients.mean(dim=1), self.grad_norm / self.grad_steps.clamp(min=1)]).tolist()
        overall = torch.stack([coefficients.mean(), coefficients.min(), coefficients.max()]).tolist()
        self.grad_norm.zero_()
        self.grad_steps.zero_()
        metrics = {f"coefficients/{name}": value for name, value in zip(("mean", "min", "max"), overall)}
        for task, mean, grad_norm in zip(tasks, *rows):
            metrics[f"coefficients/mean/{task}"] = mean
            if with_gradients:
                metrics[f"coefficients/grad_norm/{task}"] = grad_norm
        return metrics


def dropped_fractions(tasks: Sequence[str], kept: List[int], seen: List[int]) -> Dict[str, float]:
    """Model Tinting++: the share of each task's samples the filter has dropped so far."""
    return {f"filter/dropped_fraction/{t}": 1.0 - k / s if s else 0.0 for t, k, s in zip(tasks, kept, seen)}
