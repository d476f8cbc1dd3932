"""Compatibility shims needed to run FusionBench 0.2.33 on the Pythons our users have.

FusionBench 0.2.33's OpenCLIP model pool does ``from typing import override``. ``typing.override``
only exists from Python 3.12, so on 3.10/3.11 importing ``fusion_bench.modelpool.OpenCLIPVisionModelPool``
(and the OpenCLIP task pool, which imports it) raises ``ImportError``. ``typing_extensions.override``
is the official backport with the same behaviour (it only sets ``__override__`` on the function), so we
expose it as ``typing.override`` when the interpreter lacks it.

The shim must run before FusionBench's OpenCLIP modules are imported. The Hydra search-path plugin
shipped with this package (``hydra_plugins/fusion_bench_tinting``) calls it, and Hydra imports that
plugin before it composes any config, so ``fusion_bench modelpool=OpenCLIPVisionModelPool/...`` works
even when this package's own code is never imported. Importing ``fusion_bench_tinting`` applies it too.
"""

from __future__ import annotations

import typing


def ensure_typing_override() -> bool:
    """Make ``typing.override`` importable; return True when the backport was installed."""
    if hasattr(typing, "override"):
        return False
    from typing_extensions import override

    typing.override = override  # type: ignore[attr-defined]
    return True
