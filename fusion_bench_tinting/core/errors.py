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


class HubUnreachableError(TintingConfigError):
    """A model or dataset that is neither in the local Hugging Face cache nor fetchable from the hub."""

    label = "Cannot fetch from the model hub"


class SaveError(TintingConfigError):
    """A result file that could not be written at the end of a run (a full or read-only log folder)."""

    label = "Save failed"
