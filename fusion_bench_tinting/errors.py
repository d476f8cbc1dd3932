"""Errors raised for configuration mistakes, with messages that name the problem.

From the ``fusion_bench`` command a configuration error ends the run with its one-line message as the last
line of the output and exit status 2, without a traceback; ``FUSION_BENCH_TINTING_TRACEBACK=1`` keeps the
traceback (FusionBench sets ``HYDRA_FULL_ERROR=1`` in every job's environment, so that one cannot tell).
From Python it is raised as usual.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from typing import Callable, Iterator, NoReturn, TypeVar

CONFIG_ERROR_EXIT_STATUS = 2

F = TypeVar("F", bound=Callable)


class TintingConfigError(ValueError):
    """A model pool, task pool or method option that Model Tinting cannot work with."""

    #: how the one-line message starts under the ``fusion_bench`` command
    label = "Configuration error"


class NonFiniteError(TintingConfigError):
    """A weight, teacher output or loss that is NaN or infinite: the run stops where it enters."""

    label = "Non-finite values"


class HubUnreachableError(TintingConfigError):
    """A model or dataset that is neither in the local Hugging Face cache nor fetchable from the hub."""

    label = "Cannot fetch from the model hub"


class SaveError(TintingConfigError):
    """A result file that could not be written at the end of a run (a full or read-only log folder)."""

    label = "Save failed"


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
        exit_with_message(f"{error.label}: {error}", CONFIG_ERROR_EXIT_STATUS)


def reports_config_errors(function: F) -> F:
    """:func:`one_line_config_errors` around a method's ``run``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with one_line_config_errors():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
