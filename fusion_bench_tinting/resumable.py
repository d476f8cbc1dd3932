"""Checkpoints and resume for the plugin's Model Tinting: the options ``checkpoint_every`` and ``resume``, a
checkpoint on Ctrl-C or SIGTERM, and the last checkpoint named when a run fails (:class:`ResumableMixin`
around the core's :meth:`_train`) and the loop's state (:class:`ResumableTrainer`); this module decides when it is
written and read (:mod:`.checkpointing`, :mod:`.interrupts`)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from omegaconf import OmegaConf
from torch import Tensor

from .checkpointing import CheckpointStore, checkpoint_hook, fingerprint, last_checkpoint_hint, restore_and_store
from .core.errors import NonFiniteError, SaveError
from .core.options import Option, int_at_least, is_path, or_none
from .interrupts import AdaptationInterrupted, stop_requests

RESUME_OPTIONS = (
    Option(
        "checkpoint_every",
        0,
        int_at_least(0),
        "an integer >= 0 (0: no checkpoints)",
        "task steps between checkpoints in <log dir>/checkpoints (0: none; the last two are kept)",
        changes_result=False,
        section="Checkpoints and resume",
    ),
    Option(
        "resume",
        None,
        or_none(is_path),
        "null or a run's log folder",
        "a run's log folder (or its checkpoints/) to continue from; refused if pool, tasks or options differ",
        changes_result=False,
    ),
)


class ResumableTrainer:
    """A mixin of the core's loop: its whole state as a dictionary, and back (between two task steps)."""

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue exactly where the loop is (between two task steps)."""
        self._settle_empty_steps()
        return {
            "iteration": self.iteration,
            "order": self.order,
            "position": self.position,
            "visits": self.visits,
            "steps": self.steps,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "seen": list(self._seen),
            "kept": [int(k) for k in self._kept],
            "last_loss": [float(x) for x in self._last_loss],
            "coefficients": self.merger.coefficients.detach().cpu().clone(),
            "tinted": [[p.detach().cpu().clone() for p in t.tinted_parameters()] for t in self.tasks],
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "samplers": [s.state_dict() for s in self.samplers],
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iteration, self.order, self.position = state["iteration"], state["order"], state["position"]
        self.visits, self.steps, self.skipped = state["visits"], state["steps"], state["skipped"]
        self.seconds = state["seconds"]
        self._seen = list(state["seen"])
        self._kept = [torch.tensor(k, device=self.device) for k in state["kept"]]
        self._last_loss = [torch.tensor(x, device=self.device) for x in state["last_loss"]]
        self.load_adapted(state["coefficients"], state["tinted"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        for sampler, sampler_state in zip(self.samplers, state["samplers"]):
            sampler.load_state_dict(sampler_state)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    @torch.no_grad()
    def load_adapted(self, coefficients: Tensor, tinted: List[List[Tensor]]) -> None:
        """Set the merging coefficients and every task's tinted layer (a checkpoint's, or another iterate's)."""
        self.merger.coefficients.copy_(coefficients)
        for task, tensors in zip(self.tasks, tinted):
            for param, value in zip(task.tinted_parameters(), tensors):
                param.copy_(value)
        self._fixed_merge = None


class ResumableMixin:
    """Model Tinting whose adaptation resumes from ``method.resume``, checkpoints every ``checkpoint_every``
    task steps and once more on Ctrl-C or SIGTERM (ending with :class:`AdaptationInterrupted`)."""

    keep_checkpoints: int = 2
    _checkpoints: Optional[CheckpointStore] = None

    def _train(self, trainer: Any, run: Any) -> Any:
        run_fingerprint = fingerprint(
            run.tasks,
            OmegaConf.to_container(run.family.modelpool.config, resolve=True),
            OmegaConf.to_container(self.config),
            ignore=self.OPTIONS.not_changing_result(),
        )
        self._checkpoints = restore_and_store(
            trainer,
            resume=self.resume,
            run_fingerprint=run_fingerprint,
            max_steps=run.max_steps,
            log_dir=self.log_dir,
            keep=self.keep_checkpoints,
            every=self.checkpoint_every,
            fabric=self.fabric,
            option_defaults=self.OPTIONS.defaults(),
        )
        with stop_requests() as stop:
            save = checkpoint_hook(
                self._checkpoints, self.checkpoint_every, run_fingerprint, stop, self.fabric, self.log_every
            )
            try:
                return trainer.run(on_visit=save)
            except AdaptationInterrupted as interrupted:
                interrupted.log_dir = self.log_dir  # what method.resume continues
                raise
            except NonFiniteError as error:
                raise NonFiniteError(f"{error} {last_checkpoint_hint(self._checkpoints)}") from None

    def _result(self, run: Any, stats: Any) -> Any:
        try:
            return super()._result(run, stats)
        except SaveError as error:
            checkpoints = self._checkpoints if stats is not None else None  # this run's, not an earlier run's
            raise SaveError(f"{error} {last_checkpoint_hint(checkpoints)}") from error.__cause__
