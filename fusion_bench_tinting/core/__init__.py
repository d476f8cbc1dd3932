"""Model Tinting and Model Tinting++ (test-time task-wise merging, arXiv 2412.19098) as FusionBench methods.

This folder is the upstream contribution (``fusion_bench/method/model_tinting`` in FusionBench's tree): the
methods, the merge, the tinted model, the adaptation loop, the losses, the options and the CLIP family. The
tinted model switches to a task through FusionBench's ``set_task`` and gives each task's head by ``task_head``,
which FusionBench's CLIP task pool reads once the export's small edit of it is applied. It imports nothing from
the plugin around it (``fusion_bench_tinting``: suite aliases, the task-aware task pools, the other model
families, the command line's one-line exits, the comparison, the offline suites, the exporter). Its errors are
ordinary exceptions with one-line messages. The classes are imported lazily, so that importing a submodule
stays cheap.
"""

import importlib
from typing import TYPE_CHECKING, Any, Callable, Dict

__all__ = ["ModelTintingAlgorithm", "ModelTintingPlusPlus", "TintedModel"]

_LAZY = {
    "ModelTintingAlgorithm": ".algorithm",
    "ModelTintingPlusPlus": ".algorithm",
    "TintedModel": ".tinted_model",
}

if TYPE_CHECKING:
    from .algorithm import ModelTintingAlgorithm, ModelTintingPlusPlus
    from .tinted_model import TintedModel


def lazy_exports(package: str, table: Dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (relative to ``package``) on first use of ``name``."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, _LAZY)
