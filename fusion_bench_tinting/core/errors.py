"""Errors raised for configuration mistakes and bad inputs, each with a one-line message that names the
option, task or file and the fix. They are ordinary exceptions; the plugin's command line turns them into
that one line and exit status 2 (``fusion_bench_tinting.exits``)."""

from __future__ import annotations


class TintingConfigError(ValueError):
    """A model pool, task pool or method option that Model Tinting cannot work with."""

    #: how the one-line message starts under the ``fusion_bench`` command
    label = "Configuration error"


class NonFiniteError(TintingConfigError):
    """A weight, teacher output or loss that is NaN or infinite: the run stops where it enters."""

    label = "Non-finite values"


class ReadError(TintingConfigError):
    """A model, head or dataset that could not be read: ``what`` it was and the library's ``reason``."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what} could not be read: {reason}")
        self.what, self.reason = what, reason


class SaveError(TintingConfigError):
    """A result file that could not be written at the end of a run (a full or read-only log folder)."""

    label = "Save failed"
