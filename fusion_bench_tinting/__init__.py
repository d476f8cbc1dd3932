"""Model Tinting and Model Tinting++ (test-time task-wise merging) as FusionBench methods.

``fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8``

Two layers: :mod:`.core` is the upstream contribution (the methods, written to FusionBench's tree by
``fusion-bench-tinting-export-upstream``) and :mod:`.lot_merging` LOT Merging on it; the rest is the plugin
around them (suite aliases and the run-time task pool, the command line's one-line exits, the individual
models as a method, the comparison, the offline suites, the benchmarks, the test fixtures, the exporter).
The classes exported here are the core's with the plugin's command-line behaviour (:mod:`.methods`).

The classes are imported lazily: Hydra imports this package's search-path plugin (which needs
``compat``) for every FusionBench launch, and that must stay cheap.
"""

import importlib
from typing import TYPE_CHECKING, Any, Callable, Dict

from .compat import ensure_typing_override

ensure_typing_override()

__version__ = "0.1.0"
__all__ = ["ModelTintingAlgorithm", "ModelTintingPlusPlus", "TintedModel", "IndividualModels", "LOTMergingAlgorithm"]

_LAZY = {
    "ModelTintingAlgorithm": ".methods",
    "ModelTintingPlusPlus": ".methods",
    "TintedModel": ".core.tinted_model",
    "IndividualModels": ".individual",
    "LOTMergingAlgorithm": ".methods",
}

if TYPE_CHECKING:
    from .core.tinted_model import TintedModel
    from .individual import IndividualModels
    from .methods import LOTMergingAlgorithm, ModelTintingAlgorithm, ModelTintingPlusPlus


def lazy_exports(package: str, table: Dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (relative to ``package``) on first use of ``name``."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, _LAZY)
