"""LOT Merging (Layer-wise Optimal Task vector merging, arXiv 2505.23859) as a FusionBench method
(FusionBench's ``fusion_bench/method/lot_merging``): each merged layer's weights that minimise its feature drift
from the experts, in closed form (:mod:`.solver`), over Model Tinting's model families. The plugin's Model
Tinting starts from the same merge with ``init_from=lot``."""

import sys
from typing import TYPE_CHECKING

from fusion_bench.utils.lazy_imports import LazyImporter

_import_structure = {"algorithm": ["LOTMergingAlgorithm"]}

if TYPE_CHECKING:
    from .algorithm import LOTMergingAlgorithm  # noqa: F401
else:
    sys.modules[__name__] = LazyImporter(__name__, globals()["__file__"], _import_structure)
