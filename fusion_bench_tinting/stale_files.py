"""The litter of killed writes: a write killed between its temporary file and the rename (the core's
``weights_io.write_atomically``) leaves the temporary behind. :func:`remove_stale_temporaries` removes those
older than the running process (a temporary of a live writer is never older than its process); the caches
and checkpoint folders, which runs share, call it when they open."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable, Union

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
