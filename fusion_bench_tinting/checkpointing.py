"""Checkpoints of an adaptation run, written so that a killed run can resume exactly.

A checkpoint holds the trainer's whole state (coefficients, tinted layers, optimizer state, random
generator, batch samplers, the position in the task order, counters) plus a *fingerprint* of the run
(task list, model pool config, method options that change the result). Files go through Lightning
Fabric's ``save``/``load`` (the strategy decides which process writes) to a temporary name, then are
renamed, so a kill during a write never leaves a corrupt ``checkpoint-*.pt``; a file that cannot be read
anyway (a truncated copy, a full disk) is skipped for the previous one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .core.errors import TintingConfigError
from .interrupts import AdaptationInterrupted
from .stale_files import remove_stale_temporaries

log = logging.getLogger(__name__)

CHECKPOINT_FOLDER = "checkpoints"
#: a resumed run may be extended (or end sooner): checked against the iterations done instead
MAY_CHANGE_ON_RESUME = ("max_steps",)


def iterations_done(state: Mapping[str, Any]) -> int:
    """Complete iterations in a trainer state (a checkpoint taken after the last task step of an iteration
    holds that iteration's index with every task visited)."""
    order = state["order"]
    return state["iteration"] + int(order is not None and state["position"] >= len(order))


def fingerprint(
    task_names, modelpool_config: Mapping, method_config: Mapping, ignore: Iterable[str] = ()
) -> Dict[str, Any]:
    """What must be equal for a checkpoint to be resumed: JSON-able, compared key by key; ``ignore``: the
    method options that do not change the result."""
    ignored = {*ignore, *MAY_CHANGE_ON_RESUME}
    method = {k: v for k, v in method_config.items() if k not in ignored}
    return json.loads(
        json.dumps({"tasks": list(task_names), "modelpool": modelpool_config, "method": method}, default=str)
    )


def _differences(saved: Any, current: Any, path: str = "") -> List[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in saved:
                found.append(f"{where} is new ({current[key]!r})")
            elif key not in current:
                found.append(f"{where} was {saved[key]!r}, now absent")
            else:
                found.extend(_differences(saved[key], current[key], where))
        return found
    return [] if saved == current else [f"{path}: checkpoint {saved!r}, now {current!r}"]


def check_resumable(saved: Mapping, current: Mapping, source: str, option_defaults: Optional[Mapping] = None) -> None:
    """Refuse a checkpoint of another run. An option that the checkpoint does not know (added to the method
    after it was written) counts as its default there: a run at the default resumes, another value does not."""
    if option_defaults and isinstance(saved.get("method"), Mapping):
        known = saved["method"]
        added = {k: option_defaults[k] for k in current.get("method", {}) if k not in known and k in option_defaults}
        saved = {**saved, "method": {**json.loads(json.dumps(added, default=str)), **known}}
    differences = _differences(saved, current)
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise TintingConfigError(
            f"Refusing to resume from {source}: the run differs from the checkpointed one ({shown}). "
            "Resume with the same model pool, task list and method options, or start a new run."
        )


class CheckpointStore:
    """``checkpoint-<visits>.pt`` files in one folder, written and read through Lightning Fabric
    (``fabric.save``/``fabric.load``: the strategy decides which process writes, so every process calls
    them); keeps the newest ``keep``. Without a Fabric, a single-process one on the CPU is used."""

    def __init__(self, folder: os.PathLike, keep: int = 2, fabric: Optional[Any] = None):
        self.folder = Path(folder)
        self.keep = max(1, keep)
        self._fabric = fabric

    @property
    def fabric(self) -> Any:
        if self._fabric is None:
            import lightning as L

            self._fabric = L.Fabric(accelerator="cpu", devices=1)
        return self._fabric

    @classmethod
    def for_resume(cls, path: os.PathLike, keep: int = 2, fabric: Optional[Any] = None) -> "CheckpointStore":
        """Accept a checkpoint folder or the log folder of the run that wrote it."""
        path = Path(path)
        if (path / CHECKPOINT_FOLDER).is_dir():
            path = path / CHECKPOINT_FOLDER
        if not path.is_dir():
            raise TintingConfigError(
                f"resume={str(path)!r}: no such folder (give a run's log folder or its checkpoints/)"
            )
        return cls(path, keep, fabric)

    def files(self) -> List[Path]:
        found = [
            (int(p.stem.split("-")[1]), p)
            for p in self.folder.glob("checkpoint-*.pt")
            if p.stem.split("-")[1].isdigit()
        ]
        return [p for _, p in sorted(found)]

    def save(self, state: Mapping[str, Any], visits: int) -> Path:
        """Write ``state`` (every process calls this), then make it the newest checkpoint: written to a
        temporary name, synced and renamed by the global-zero process, so a kill never leaves half a file."""
        path = self.folder / f"checkpoint-{visits}.pt"
        temporary = path.with_name(path.name + ".tmp")
        if self.fabric.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder, ("checkpoint-*.pt.tmp",))
        self.fabric.save(temporary, dict(state))  # ends with a barrier
        if self.fabric.is_global_zero:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            for old in self.files()[: -self.keep]:
                old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> Tuple[Optional[Dict[str, Any]], Optional[Path]]:
        """The newest readable checkpoint (skipping unreadable ones with a warning), or (None, None). Read with
        ``weights_only=True``: a checkpoint holds tensors and plain data only, so a crafted file that names
        any other object is refused before anything in it runs."""
        for path in reversed(self.files()):
            try:
                return self.fabric.load(path, weights_only=True), path
            except Exception as error:  # truncated or otherwise unreadable file, or one naming other objects
                if isinstance(error, pickle.UnpicklingError) and "weights only" in str(error).lower():
                    raise TintingConfigError(
                        f"Refusing checkpoint {path}: it holds objects other than tensors and plain data, which "
                        "this method never writes (loading it could run code). Delete it or resume from another run."
                    ) from None
                log.warning("Checkpoint %s cannot be read (%s); trying the previous one.", path, error)
        return None, None


def resume_state(
    resume: str,
    run_fingerprint: Mapping,
    max_steps: int,
    fabric: Optional[Any] = None,
    option_defaults: Optional[Mapping] = None,
) -> Tuple[Dict[str, Any], Path]:
    """The trainer state of the newest readable checkpoint of the run in ``resume``, once it is known to
    belong to this run and to have done no more than ``max_steps`` iterations (more extends the run).
    Every process calls it (``fabric.load``)."""
    store = CheckpointStore.for_resume(resume, fabric=fabric)
    state, path = store.load_latest()
    if state is None:
        raise TintingConfigError(f"resume={resume!r}: no readable checkpoint in {store.folder}")
    check_resumable(state["fingerprint"], run_fingerprint, str(path), option_defaults)
    done, asked = iterations_done(state["trainer"]), state.get("max_steps")
    if isinstance(asked, int) and done < asked and max_steps < asked:
        log.warning(
            "The interrupted run asked for %d iterations; this one stops at %d (method.max_steps=%d): add "
            "method.max_steps=%d to finish it.",
            asked,
            max_steps,
            max_steps,
            asked,
        )
    if done > max_steps:
        raise TintingConfigError(
            f"method.max_steps={max_steps} is below the {done} iterations the checkpoint {path} has done: "
            f"resume with max_steps >= {done} (a larger value extends the run)."
        )
    return state["trainer"], path


def checkpoint_hook(
    store: Optional[CheckpointStore],
    every: int,
    run_fingerprint: Mapping,
    stop: Any,
    fabric: Any,
    stop_check_every: int = 1,
) -> Callable[[Any], None]:
    """What runs after every task step: a checkpoint every ``every`` steps (0: never) into ``store``, and on
    Ctrl-C or SIGTERM (``stop``, see :mod:`.interrupts`) a last one, then :class:`AdaptationInterrupted`.
    Every process runs it at the same steps. With several processes the stop is decided together (a signal
    may reach them a step apart, and a checkpoint is a collective call), every ``stop_check_every`` steps
    (the steps that read the loss anyway), so that no other step waits on the host."""

    def save(trainer) -> Optional[Path]:
        if store is None:
            return None
        return store.save(
            {"fingerprint": run_fingerprint, "trainer": trainer.state_dict(), "max_steps": trainer.options.max_steps},
            trainer.visits,
        )

    def stop_now(trainer) -> bool:
        if fabric.world_size == 1:
            return stop.requested
        if trainer.visits % max(1, stop_check_every):
            return False
        return fabric.strategy.reduce_boolean_decision(stop.requested, all=False)

    def after_step(trainer) -> None:
        if stop_now(trainer):
            path = save(trainer)
            raise AdaptationInterrupted(stop.name, None if path is None else str(path))
        if every > 0 and trainer.visits % every == 0:
            save(trainer)

    return after_step


def restore_and_store(
    trainer: Any,
    *,
    resume: Optional[str],
    run_fingerprint: Mapping,
    max_steps: int,
    log_dir: Optional[str],
    keep: int,
    every: int,
    fabric: Any,
    option_defaults: Optional[Mapping] = None,
) -> Optional[CheckpointStore]:
    """Load ``resume``'s newest checkpoint into ``trainer`` (when asked) and return where this run's own
    checkpoints go: ``<log_dir>/checkpoints``, or None without a log folder."""
    if resume:
        state, path = resume_state(resume, run_fingerprint, max_steps, fabric, option_defaults)
        trainer.load_state_dict(state)
        log.info("Resumed from %s (iteration %d, %d task steps done).", path, trainer.iteration, trainer.visits)
    if log_dir is not None:
        return CheckpointStore(Path(log_dir) / CHECKPOINT_FOLDER, keep=keep, fabric=fabric)
    if every > 0:
        log.warning("No log folder (no Fabric logger): checkpoints are not written.")
    return None


def last_checkpoint_hint(store: Optional["CheckpointStore"]) -> str:
    """Where the adaptation's last checkpoint is and how to continue from it, for a run that failed."""
    files = store.files() if store is not None and store.folder.is_dir() else []
    if not files:
        return "No checkpoint was written (method.checkpoint_every=0): set it to keep one during long runs."
    folder = os.path.abspath(store.folder.parent)
    return f"The last checkpoint, {files[-1]}, stays: continue with method.resume={folder}"
