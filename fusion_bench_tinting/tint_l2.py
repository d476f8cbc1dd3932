"""The plugin's option ``tint_l2``: an L2 penalty holding each task's tinted layer near its start (the fine-tuned
head), ``loss + tint_l2 / 2 * ||theta - theta_start||^2``. A departure from the paper (docs/algorithm.md), measured
in docs/generalization.md; 0, the default, is the paper's loss. :class:`TintL2Mixin` adds it to the core's method
and :class:`TintL2Trainer` to its loop."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from torch import Tensor

from .core.options import Option, number_at_least

TINT_L2_OPTION = Option(
    "tint_l2",
    0.0,
    number_at_least(0),
    "a number >= 0 (0: off, the paper)",
    "strength of an L2 penalty pulling each task's tinted layer towards its start (the fine-tuned head): "
    "loss + tint_l2 / 2 * ||theta - theta_start||^2 (docs/generalization.md); 0: off, as the paper",
    section="The plugin's levers: departures from the paper, off by default",
)


def l2_to_start(params: List[Tensor], starts: List[Tensor], strength: float) -> Tensor:
    """``strength / 2 * ||theta - theta_start||^2`` over a tinted layer's tensors."""
    return strength / 2 * sum(((p.float() - s.float()) ** 2).sum() for p, s in zip(params, starts))


class TintL2Trainer:
    """A mixin of the core's loop that adds the ``tint_l2`` penalty to each task's loss (each data-parallel
    process adds its share, as the gradients are summed over processes; the logged loss stays the task's own)."""

    def __init__(self, *args: Any, tint_l2: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tint_l2 = tint_l2
        #: each task's tinted layer as it starts
        self._starts = [[p.detach().clone() for p in t.tinted_parameters()] for t in self.tasks] if tint_l2 else None

    def task_loss(self, index: int, merged: Optional[Mapping[str, Tensor]]) -> Optional[Tensor]:
        loss = super().task_loss(index, merged)
        if loss is None or self._starts is None:
            return loss
        penalty = l2_to_start(self.tasks[index].tinted_parameters(), self._starts[index], self.tint_l2)
        return loss + penalty / self.data_parallel.world_size


class TintL2Mixin:
    """Model Tinting with the option ``tint_l2`` (passed to :class:`TintL2Trainer`)."""

    def _trainer_settings(self) -> Dict[str, Any]:
        return {**super()._trainer_settings(), "tint_l2": self.tint_l2}
