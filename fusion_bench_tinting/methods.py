"""The methods as the plugin's ``fusion_bench`` commands run them: the core classes (:mod:`.core`, the
upstream contribution) with the suite's task-aware task pool completed at the start of the run
(:mod:`.suites`) and the core's exceptions ended in one line under the command (:mod:`.exits`)."""

from __future__ import annotations

import inspect
from typing import Callable

from fusion_bench import BaseModelPool

from .core import algorithm
from .exits import one_line_config_errors, one_line_interruption
from .lot_merging import algorithm as lot_algorithm
from .suites import SuiteTaskPoolMixin


def _one_line_constructor(core: type) -> Callable:
    """``core``'s constructor with its signature (the method's options), a bad option ending the command in
    one line before any model is loaded."""

    def __init__(self, **options):
        with one_line_config_errors():
            core.__init__(self, **options)

    __init__.__signature__ = inspect.signature(core.__init__)
    return __init__


class CommandLineMethod(SuiteTaskPoolMixin):
    """A failed or interrupted run ends the command in one line."""

    def run(self, modelpool: BaseModelPool):
        with one_line_config_errors(), one_line_interruption(prints=self.fabric.is_global_zero):
            return super().run(modelpool)


class ModelTintingAlgorithm(CommandLineMethod, algorithm.ModelTintingAlgorithm):
    __doc__ = algorithm.ModelTintingAlgorithm.__doc__
    __init__ = _one_line_constructor(algorithm.ModelTintingAlgorithm)


class ModelTintingPlusPlus(CommandLineMethod, algorithm.ModelTintingPlusPlus):
    __doc__ = algorithm.ModelTintingPlusPlus.__doc__
    __init__ = _one_line_constructor(algorithm.ModelTintingPlusPlus)


class LOTMergingAlgorithm(CommandLineMethod, lot_algorithm.LOTMergingAlgorithm):
    __doc__ = lot_algorithm.LOTMergingAlgorithm.__doc__
    __init__ = _one_line_constructor(lot_algorithm.LOTMergingAlgorithm)
