"""LOT Merging (Layer-wise Optimal Task vector merging, arXiv 2505.23859) as a FusionBench method
(FusionBench's ``fusion_bench/method/lot_merging``): each merged layer's weights that minimise its feature drift
from the experts, in closed form (:mod:`.solver`), over Model Tinting's model families. Model Tinting starts
from the same merge with ``init_from=lot``."""

from typing import TYPE_CHECKING

from ..core import lazy_exports

__all__ = ["LOTMergingAlgorithm"]

if TYPE_CHECKING:
    from .algorithm import LOTMergingAlgorithm

__getattr__ = lazy_exports(__name__, {"LOTMergingAlgorithm": ".algorithm"})
