"""Model Tinting and Model Tinting++ (test-time task-wise merging) as FusionBench methods.

``fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8``
"""

from .compat import ensure_typing_override

ensure_typing_override()

from .algorithm import ModelTintingAlgorithm, ModelTintingPlusPlus  # noqa: E402
from .tinted_model import TintedModel  # noqa: E402

__all__ = ["ModelTintingAlgorithm", "ModelTintingPlusPlus", "TintedModel"]
__version__ = "0.1.0"
