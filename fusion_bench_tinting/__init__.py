"""Model Tinting and Model Tinting++ (test-time task-wise merging) as FusionBench methods.

``fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8``

The classes are imported lazily: Hydra imports this package's search-path plugin (which needs
``compat``) for every FusionBench launch, and that must stay cheap.
"""

from typing import TYPE_CHECKING

from .compat import ensure_typing_override

ensure_typing_override()

__version__ = "0.1.0"
__all__ = ["ModelTintingAlgorithm", "ModelTintingPlusPlus", "TintedModel", "IndividualModels", "LOTMergingAlgorithm"]

_LAZY = {
    "ModelTintingAlgorithm": ".algorithm",
    "ModelTintingPlusPlus": ".algorithm",
    "TintedModel": ".tinted_model",
    "IndividualModels": ".individual",
    "LOTMergingAlgorithm": ".lot.algorithm",
}

if TYPE_CHECKING:
    from .algorithm import ModelTintingAlgorithm, ModelTintingPlusPlus
    from .individual import IndividualModels
    from .lot.algorithm import LOTMergingAlgorithm
    from .tinted_model import TintedModel


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
