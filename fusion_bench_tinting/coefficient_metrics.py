"""The coefficients' figures the plugin's loop logs every ``log_every`` iterations beside the core's losses
(:class:`CoefficientMetricsTrainer`), read back by the comparison's trajectories (``comparison/trajectories.py``).

The loop must not synchronise with the host at every step, so each task's coefficient-gradient norms are
device tensors, read once per window.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor


class MetricWindow:
    """Per task, the mean norm of its steps' coefficient gradients over a window (``coefficients/grad_norm/<task>``:
    how much signal each task gives the coefficients)."""

    def __init__(self, num_tasks: int, device: torch.device):
        self.grad_norm = torch.zeros(num_tasks, device=device)
        self.grad_steps = torch.zeros(num_tasks, device=device)

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


class CoefficientMetricsTrainer:
    """A mixin of the core's loop that also logs, per task, its mean coefficient and coefficient-gradient norm,
    their overall mean, min and max, and (Model Tinting++) the share of samples the filter dropped."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.window = MetricWindow(len(self.tasks), self.device)

    def _sequential_step(self, index: int) -> None:
        steps = self.steps
        super()._sequential_step(index)
        if self.log_metrics is not None and self.steps > steps:  # the step's coefficient gradient (unscaled)
            self.window.add_coefficient_gradient(index, self.merger.coefficients.grad)

    def _window_metrics(self) -> Dict[str, float]:
        names = [t.name for t in self.tasks]
        coefficients = self.merger.effective_coefficients().detach()
        metrics = {**super()._window_metrics()}
        metrics.update(self.window.coefficient_metrics(coefficients, names, self.options.train_coefficients))
        if self.options.confidence_filter:
            metrics.update(dropped_fractions(names, torch.stack(self._kept).tolist(), self._seen))
        return metrics
