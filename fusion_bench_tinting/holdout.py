"""The plugin's option ``select_on_holdout``: choosing when to stop on held-out inputs (0, the default, is the
paper's: keep the last iterate). A departure from the paper (docs/algorithm.md), measured in
docs/generalization.md; :class:`HoldoutMixin` adds it to the core's method and :class:`HoldoutTrainer` to its loop.

Adapting on a fixed set of unlabelled inputs, each task's tinted layer ends up fitting the teacher's labels of
those very inputs (docs/generalization.md): on other inputs accuracy peaks early and then falls. With
``select_on_holdout=f`` a fraction ``f`` of each task's adaptation inputs is kept out of the training batches;
at the start and at every logging point the merged model's agreement with the teachers on them is measured,
and the coefficients and tinted layers of the best measurement are the result. The score is the mean over
classification tasks of the share of held-out inputs whose top class is the teacher's; a run whose tasks are
all regressions or dense predictions scores the negative mean held-out loss instead. Every data-parallel
process measures the whole held-out set, so they all keep the same state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from .core.data import EpochSampler
from .core.errors import TintingConfigError
from .core.losses import per_sample_loss
from .core.options import Option, is_number
from .core.run_state import AdaptationStats

if TYPE_CHECKING:
    from .core.adaptation import TintingTrainer
    from .core.run_state import TaskState

HOLDOUT_OPTION = Option(
    "select_on_holdout",
    0.0,
    lambda value: is_number(value) and 0 <= value < 0.5,
    "a number in [0, 0.5) (0: off, the paper)",
    "share of each task's adaptation inputs held out; the result is the state (measured at the start and "
    "every 10 iterations) that agrees most with the teachers on them (docs/generalization.md); 0: the "
    "last state, as the paper",
)


def split_holdout(sizes: List[int], fraction: float, seed: int) -> List[Dict[str, Tensor]]:
    """Per task, a random ``held`` share (at least one input) and the ``kept`` rest, drawn from a generator of
    their own so that the adaptation's random stream is the same as without a hold-out."""
    generator = torch.Generator().manual_seed(seed)
    splits = []
    for size in sizes:
        held = max(1, round(fraction * size))
        if held >= size:
            raise TintingConfigError(
                f"select_on_holdout={fraction}: a task has {size} adaptation input(s), too few to hold "
                f"{held} out and adapt on the rest."
            )
        order = torch.randperm(size, generator=generator)
        splits.append({"held": order[:held].sort().values, "kept": order[held:].sort().values})
    return splits


class HoldoutSelection:
    """Measures the teacher agreement on the held-out inputs and keeps the best state (see module doc)."""

    def __init__(self, tasks: List["TaskState"], held: List[Tensor], batch_size: int):
        self.held, self.batch_size = held, batch_size
        self.classification = [i for i, t in enumerate(tasks) if not t.is_regression]
        self.scores: Dict[int, float] = {}
        self.best: Optional[Dict[str, Any]] = None

    @torch.no_grad()
    def _task_score(self, trainer: "TintingTrainer", index: int, merged: Optional[Mapping[str, Tensor]]) -> float:
        """Agreement with the teacher (classification) or the negative mean loss on task ``index``'s held-out inputs."""
        task, total = trainer.tasks[index], 0.0
        for chunk in self.held[index].split(self.batch_size):
            inputs = task.inputs.gather(chunk, trainer.device, trainer.input_dtype)
            teacher = task.teacher.index_select(0, chunk.to(trainer.device))
            with trainer.autocast():
                logits = trainer.student_logits(task, merged, inputs).float()
            if task.is_regression:
                losses = per_sample_loss(task.objective or trainer.options.loss, logits, teacher)
                total -= float(losses.reshape(len(chunk), -1).mean(1).sum())
            else:  # per pixel for a dense prediction, averaged per input
                agree = logits.argmax(1) == teacher.argmax(1)
                total += float(agree.float().reshape(len(chunk), -1).mean(1).sum())
        return total / self.held[index].numel()

    def measure(self, trainer: "TintingTrainer", iteration: int) -> None:
        """Score the current state after ``iteration`` iterations and keep it when it is the best so far."""
        with torch.no_grad():
            merged = trainer.merged()
            indices = self.classification or range(len(trainer.tasks))
            score = sum(self._task_score(trainer, i, merged) for i in indices) / len(indices)
        self.scores[iteration] = score
        if self.best is None or score > self.best["score"]:
            self.best = {
                "score": score,
                "iteration": iteration,
                "coefficients": trainer.merger.coefficients.detach().clone(),
                "tinted": [[p.detach().clone() for p in t.tinted_parameters()] for t in trainer.tasks],
            }

    def restore_best(self, trainer: "TintingTrainer") -> None:
        """Put the best measured state back into the merger and the tinted layers."""
        if self.best is not None:
            trainer.load_adapted(self.best["coefficients"], self.best["tinted"])

    def report(self) -> Dict[str, Any]:
        return {
            "held_out_per_task": [int(h.numel()) for h in self.held],
            "selected_iteration": None if self.best is None else self.best["iteration"],
            "score_by_iteration": {int(k): round(v, 6) for k, v in self.scores.items()},
        }

    def state_dict(self) -> Dict[str, Any]:
        return {"scores": dict(self.scores), "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.scores = dict(state["scores"])
        best = state["best"]
        if best is not None:
            best = {
                **best,
                "coefficients": best["coefficients"].to(device),
                "tinted": [[t.to(device) for t in tensors] for tensors in best["tinted"]],
            }
        self.best = best


class HoldoutTrainer:
    """A mixin of the core's loop (:class:`~fusion_bench_tinting.core.adaptation.TintingTrainer`) that, with
    ``select_on_holdout > 0``, adapts on the kept inputs only, measures the held-out agreement at the start and at
    each logging point, and ends on the best measured state (its report in the statistics' ``extras``)."""

    def __init__(self, *args: Any, select_on_holdout: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.selection: Optional[HoldoutSelection] = None
        if select_on_holdout:
            sizes = [len(t.inputs) for t in self.tasks]
            splits = split_holdout(sizes, select_on_holdout, self.generator.initial_seed())
            batch = self.options.batch_size
            self.samplers = [EpochSampler(n, batch, self.generator, s["kept"]) for n, s in zip(sizes, splits)]
            self.selection = HoldoutSelection(self.tasks, [s["held"] for s in splits], batch)

    def _iterate(self, *args: Any) -> Optional[float]:
        if self.selection is not None and not self.selection.scores:
            self.selection.measure(self, self.iteration)  # the start is a candidate too
        return super()._iterate(*args)

    def _log_window(self, iteration: int, progress: Any) -> None:
        super()._log_window(iteration, progress)
        if self.selection is not None:
            self.selection.measure(self, iteration + 1)

    def run(self, *args: Any, **kwargs: Any) -> AdaptationStats:
        stats = super().run(*args, **kwargs)
        if self.selection is not None:
            self.selection.restore_best(self)
            stats.extras["selection"] = self.selection.report()
        return stats

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        return state if self.selection is None else {**state, "selection": self.selection.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.selection is not None and "selection" in state:
            self.selection.load_state_dict(state["selection"], self.device)


class HoldoutMixin:
    """Model Tinting with the option ``select_on_holdout`` (passed to :class:`HoldoutTrainer`)."""

    def _trainer_settings(self) -> Dict[str, Any]:
        return {**super()._trainer_settings(), "select_on_holdout": self.select_on_holdout}
