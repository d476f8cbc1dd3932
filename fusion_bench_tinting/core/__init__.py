"""Model Tinting and Model Tinting++ (test-time task-wise merging, arXiv 2412.19098) as FusionBench methods.

The methods, the merge, the tinted model, the adaptation loop, the losses, the options and the CLIP family: the
upstream contribution (``fusion_bench/method/model_tinting``). The tinted model switches tasks through
FusionBench's ``set_task`` and gives each task's head by ``task_head``, which FusionBench's CLIP task pool reads
once the export's small edit of it is applied. Errors are ordinary exceptions with one-line messages. It imports
nothing from the plugin around it (``fusion_bench_tinting``). Classes are imported lazily, as FusionBench's.
"""

import sys
from typing import TYPE_CHECKING

from fusion_bench.utils.lazy_imports import LazyImporter

_import_structure = {"algorithm": ["ModelTintingAlgorithm", "ModelTintingPlusPlus"], "tinted_model": ["TintedModel"]}

if TYPE_CHECKING:
    from .algorithm import ModelTintingAlgorithm, ModelTintingPlusPlus  # noqa: F401
    from .tinted_model import TintedModel  # noqa: F401
else:
    sys.modules[__name__] = LazyImporter(__name__, globals()["__file__"], _import_structure)
