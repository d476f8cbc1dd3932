"""What a run prints beyond FusionBench's own output: one progress bar per phase and one line with the values
the ``auto`` options stood for."""

from __future__ import annotations

from typing import Iterable, List, Optional

from lightning.fabric.utilities.rank_zero import rank_zero_only
from tqdm.auto import tqdm

#: what draws the bars (tqdm's signature); a front end may put another here, e.g. one for log files
bar = tqdm


def progress(
    iterable: Optional[Iterable] = None,
    *,
    desc: str,
    total: Optional[int] = None,
    initial: int = 0,
    nested: bool = False,
) -> tqdm:
    """A bar for one phase of the run (``nested``: a part of a phase, removed when it ends), on the
    global-zero process only."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return bar(iterable, desc=desc, total=total, initial=initial, leave=not nested, disable=rank_zero_only.rank != 0)


@rank_zero_only
def log_effective_options(method: str, tasks: List[str], resolved: dict) -> None:
    """One line with what the ``auto`` options stood for (the config tree printed above shows the rest)."""
    values = ", ".join(
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}" for name, value in resolved.items()
    )
    print(f"{method} on {len(tasks)} tasks ({', '.join(tasks)}): {values}", flush=True)
