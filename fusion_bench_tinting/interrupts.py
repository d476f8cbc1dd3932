"""Ctrl-C (SIGINT) or SIGTERM during adaptation: stop at the next step boundary, keep the work, say how to go on.

While :func:`stop_requests` is active, the first signal only records a request (a second Ctrl-C interrupts
at once, as usual); the adaptation loop checks it after every task step, writes a checkpoint and ends the run
with :class:`AdaptationInterrupted`, whose message says where the checkpoint is and how to continue
(the plugin's command line prints it as one line with the whole command, exit status 130).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AdaptationInterrupted(Exception):
    """The run stopped at a step boundary on a signal; ``checkpoint`` is where its state was written."""

    def __init__(self, signal_name: str, checkpoint: Optional[str], log_dir: Optional[str] = None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        #: the run's log folder, the ``method.resume`` that continues it (set by the method)
        self.log_dir = log_dir

    def __str__(self) -> str:
        if self.checkpoint is None:
            return f"Adaptation stopped by {self.signal_name}; no log folder, so no checkpoint was written."
        resume = f" Continue with method.resume={os.path.abspath(self.log_dir)}" if self.log_dir else ""
        return f"Adaptation stopped by {self.signal_name}; checkpoint written to {self.checkpoint}.{resume}"


class StopRequest:
    """The signal that asked the run to stop, or None."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Record SIGINT/SIGTERM instead of raising, for the duration of the block (main thread only; elsewhere
    the signals keep their handlers and the request never comes)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def record(signum, frame) -> None:
        request.signal = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    for s in SIGNALS:
        signal.signal(s, record)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
