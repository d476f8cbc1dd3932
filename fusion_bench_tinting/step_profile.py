"""Each part of a task step timed on its own (data, merge, forward, backward, optimizer), for the speed
benchmark (docs/speed.md): ``profile_steps`` on a method instance hands the core's loop a ``section`` that
synchronises the device around each part. Off by default: the synchronisations slow the loop."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, Iterator

import torch


def step_sections(
    fabric: Any, profile: Callable[[str], ContextManager], enabled: bool
) -> Callable[[str], ContextManager]:
    """The profiler around each part of a step (``profile_steps``), with the device synchronised on both
    sides so that each time is the part's own; a no-op when not ``enabled`` (the syncs slow the loop)."""
    if not enabled:
        return lambda name: contextlib.nullcontext()
    synchronize = torch.cuda.synchronize if torch.device(fabric.device).type == "cuda" else (lambda: None)

    @contextlib.contextmanager
    def section(name: str) -> Iterator[None]:
        synchronize()
        with profile(f"step: {name}"):
            yield
            synchronize()

    return section


class StepProfileMixin:
    """Model Tinting whose loop times each part of a step when ``profile_steps`` is set (not an option)."""

    #: time data/merge/forward/backward/optimizer of each step (adds device syncs)
    profile_steps: bool = False

    def _trainer_settings(self) -> Dict[str, Any]:
        section = step_sections(self.fabric, self.profile, self.profile_steps)
        return {**super()._trainer_settings(), "section": section}
