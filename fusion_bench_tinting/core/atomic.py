"""Files written whole or not at all, and the litter of writes that were killed.

Every file a run writes at its end (weights, config, cache entries, checkpoints) goes to a temporary name of
this process, is flushed to disk and then renamed over its final name: a kill or a full disk leaves either
the old file or the new one, never half of one. A killed write leaves its temporary file behind;
:func:`remove_stale_temporaries` removes those that are older than the running process (a temporary of a
live writer is never older than its process).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterable, Union

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _process_start_time() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # no psutil, or a platform it cannot read: the import time is a later bound
        return time.time()


#: when this process started (seconds since the epoch): temporaries older than it belong to dead writers
PROCESS_START = _process_start_time()


def temporary_name(path: PathLike) -> Path:
    """A name beside ``path`` that no other process writes (hosts may share a folder)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def write_atomically(path: PathLike, write: Callable[[str], None]) -> None:
    """``write(temporary)``, then fsync and rename it to ``path``; on any failure the temporary is removed and
    ``path`` is left as it was."""
    temporary = temporary_name(path)
    try:
        write(str(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: PathLike, patterns: Iterable[str] = ("*.tmp", ".tmp*")) -> int:
    """Remove files matching ``patterns`` in ``folder`` that were last written before this process started
    (``.tmp*``: safetensors' own temporaries); returns how many went."""
    removed = 0
    for pattern in patterns:
        for stale in Path(folder).glob(pattern):
            try:
                if stale.is_file() and stale.stat().st_mtime < PROCESS_START:
                    stale.unlink()
                    removed += 1
            except OSError:  # another writer removed or renamed it first
                continue
    if removed:
        log.info("Removed %d temporary file(s) left by killed writes in %s.", removed, folder)
    return removed
