"""Choosing when to stop on held-out inputs (``select_on_holdout``; 0, the default, is the paper's: keep the last
iterate).

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

from .errors import TintingConfigError
from .losses import per_sample_loss

if TYPE_CHECKING:
    from .adaptation import TintingTrainer
    from .run_state import TaskState


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
