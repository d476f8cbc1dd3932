"""The ``fusion_bench`` command's one-line exits for the methods' ordinary exceptions.

Under the ``fusion_bench`` command a configuration error (:class:`~.core.errors.TintingConfigError` and its
kinds) ends the run with its one-line message as the last line of the output and exit status 2, without a
traceback, and a Ctrl-C or SIGTERM during adaptation with the whole command that continues the run and exit
status 130. ``FUSION_BENCH_TINTING_TRACEBACK=1`` keeps the traceback (FusionBench sets ``HYDRA_FULL_ERROR=1``
in every job's environment, so that one cannot tell). From Python the exceptions are raised as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from typing import Iterator, List, NoReturn

from .core.errors import ReadError, TintingConfigError
from .interrupts import AdaptationInterrupted

CONFIG_ERROR_EXIT_STATUS = 2
INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a process ended by Ctrl-C

#: what the hub libraries say when a file is neither cached nor reachable (transformers, datasets, huggingface_hub)
_UNREACHABLE = (
    "couldn't connect to",
    "couldn't reach",
    "offline mode",
    "outgoing traffic has been disabled",
    "localentrynotfounderror",
    "offlinemodeisenabled",
)


def hub_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the hub could not be reached for a file the cache lacks."""
    seen = 0
    while error is not None and seen < 8:
        text = f"{type(error).__name__} {error}".lower()
        if any(marker in text for marker in _UNREACHABLE):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


HUB_WAYS_FORWARD = (
    "Ways forward: allow hub access (a network, HF_HUB_OFFLINE unset); or fetch the suite's models and datasets "
    "where the hub is reachable (`fusion-bench-tinting-hub-ids --suite <suite>` prints their `huggingface-cli "
    "download` lines) and point HF_HOME at that cache; or run an offline suite (modelpool=minilm_text or "
    "lite0_images, see docs/suites.md)."
)


def one_line_message(error: TintingConfigError) -> str:
    """The error's line under the command; a model or dataset the hub would have to provide is said to be
    unreachable, with the ways forward."""
    if isinstance(error, ReadError) and hub_unreachable(error.__cause__):
        return (
            f"Cannot fetch from the model hub: {error.what} is not in the local Hugging Face cache and the hub "
            f"cannot be reached ({error.reason}). {HUB_WAYS_FORWARD}"
        )
    return f"{error.label}: {error}"


def _from_the_command_line() -> bool:
    command = os.path.basename(sys.argv[0] if sys.argv else "")
    return command == "fusion_bench" and os.environ.get("FUSION_BENCH_TINTING_TRACEBACK") != "1"


class _NoExitTraceback(logging.Filter):
    """FusionBench's command logs every exception leaving the program with its traceback, ``SystemExit``
    included; an exit we chose has said what it had to say already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SystemExit))


def exit_with_message(message: str, status: int) -> NoReturn:
    """Print ``message`` as the last line on stderr and end the ``fusion_bench`` run with ``status``."""
    command_logger = logging.getLogger("fusion_bench.scripts.cli")
    if not any(isinstance(f, _NoExitTraceback) for f in command_logger.filters):
        command_logger.addFilter(_NoExitTraceback())
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(status)


@contextlib.contextmanager
def one_line_config_errors() -> Iterator[None]:
    """Turn a :class:`TintingConfigError` into its message and exit status 2 under the ``fusion_bench`` command."""
    try:
        yield
    except TintingConfigError as error:
        if not _from_the_command_line():
            raise
        exit_with_message(one_line_message(error), CONFIG_ERROR_EXIT_STATUS)


@contextlib.contextmanager
def one_line_interruption(prints: bool) -> Iterator[None]:
    """Turn :class:`AdaptationInterrupted` into one line with the command that continues the run (from the
    process that ``prints``) and exit status 130, without a traceback."""
    try:
        yield
    except AdaptationInterrupted as interrupted:
        line = str(interrupted)
        if interrupted.checkpoint is not None and interrupted.log_dir is not None:
            line = line.split(" Continue with ")[0] + f" Continue with: {resume_command(sys.argv, interrupted.log_dir)}"
        exit_with_message(line if prints else "", INTERRUPTED_EXIT_STATUS)


def resume_command(argv: List[str], log_dir: str) -> str:
    """The command that continues the run: the same command and overrides (``max_steps`` included), with
    ``method.resume`` set to the absolute path of its log folder and a log folder of its own."""
    program = os.path.basename(argv[0]) if argv else "fusion_bench"
    kept = [a for a in argv[1:] if not a.lstrip("+~").startswith(("method.resume=", "path.log_dir="))]
    return shlex.join([program, *kept, f"method.resume={os.path.abspath(log_dir)}"])
