"""Ctrl-C (SIGINT) or SIGTERM during adaptation: stop at the next step boundary, keep the work, say how to go on.

While :func:`stop_requests` is active, the first signal only records a request (a second Ctrl-C interrupts
at once, as usual); the adaptation loop checks it after every task step, writes a checkpoint and ends the run
with :class:`AdaptationInterrupted`, which the method turns into one line and exit status 130.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from typing import Iterator, List, NoReturn, Optional

from .errors import exit_with_message

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = 130  # what a shell reports for a process ended by Ctrl-C


class AdaptationInterrupted(Exception):
    """The run stopped at a step boundary on a signal; ``checkpoint`` is where its state was written."""

    def __init__(self, signal_name: str, checkpoint: Optional[str]):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.checkpoint = checkpoint


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


def exit_interrupted(interrupted: AdaptationInterrupted, log_dir: Optional[str], prints: bool) -> NoReturn:
    """One line saying where the work is and how to continue (from the process that ``prints``), then exit
    status 130 without a traceback."""
    if interrupted.checkpoint is None:
        line = f"Adaptation stopped by {interrupted.signal_name}; no log folder, so no checkpoint was written."
    else:
        line = (
            f"Adaptation stopped by {interrupted.signal_name}; checkpoint written to {interrupted.checkpoint}. "
            f"Continue with: {resume_command(sys.argv, str(log_dir))}"
        )
    exit_with_message(line if prints else "", EXIT_STATUS)


def resume_command(argv: List[str], log_dir: str) -> str:
    """The command that continues the run: the same command and overrides (``max_steps`` included), with
    ``method.resume`` set to the absolute path of its log folder and a log folder of its own."""
    program = os.path.basename(argv[0]) if argv else "fusion_bench"
    kept = [a for a in argv[1:] if not a.lstrip("+~").startswith(("method.resume=", "path.log_dir="))]
    return shlex.join([program, *kept, f"method.resume={os.path.abspath(log_dir)}"])
