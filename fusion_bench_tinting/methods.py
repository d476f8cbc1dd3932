"""The methods as the plugin's ``fusion_bench`` commands run them: the core classes (:mod:`.core`, the
upstream contribution) with the suite's task-aware task pool completed at the start of the run
(:mod:`.suites`), the core's exceptions ended in one line under the command (:mod:`.exits`), the expected
noise of the run hidden and its profile written to the log folder (:mod:`.quiet`), and each task's inputs and
teacher outputs cached on disk (:mod:`.caching`), the learned coefficients drawn in TensorBoard (:mod:`.heatmap`)."""

from __future__ import annotations

import inspect
from typing import Callable

from fusion_bench import BaseModelPool

from .caching import CachedTeacherPassMixin
from .core import algorithm
from .core.families import family_for
from .exits import one_line_config_errors, one_line_interruption
from .heatmap import CoefficientHeatmapMixin
from .lot_merging import algorithm as lot_algorithm
from .quiet import profile_to_log_dir, quiet_run
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
    """A failed or interrupted run ends the command in one line; the load reports that the pool's model family
    expects are not shown."""

    def run(self, modelpool: BaseModelPool):
        with one_line_config_errors(), one_line_interruption(prints=self.fabric.is_global_zero):
            with quiet_run(family_for(modelpool, self.fabric).expected_load_report):
                return super().run(modelpool)

    def print_profile_summary(self, *args, **kwargs) -> None:
        """Into ``<log_dir>/profile.txt`` (printed when verbose)."""
        if not profile_to_log_dir(self, self.log_dir):
            super().print_profile_summary(*args, **kwargs)


class ModelTintingAlgorithm(
    CommandLineMethod, CachedTeacherPassMixin, CoefficientHeatmapMixin, algorithm.ModelTintingAlgorithm
):
    __doc__ = algorithm.ModelTintingAlgorithm.__doc__
    __init__ = _one_line_constructor(algorithm.ModelTintingAlgorithm)


class ModelTintingPlusPlus(
    CommandLineMethod, CachedTeacherPassMixin, CoefficientHeatmapMixin, algorithm.ModelTintingPlusPlus
):
    __doc__ = algorithm.ModelTintingPlusPlus.__doc__
    __init__ = _one_line_constructor(algorithm.ModelTintingPlusPlus)


class LOTMergingAlgorithm(CommandLineMethod, lot_algorithm.LOTMergingAlgorithm):
    __doc__ = lot_algorithm.LOTMergingAlgorithm.__doc__
    __init__ = _one_line_constructor(lot_algorithm.LOTMergingAlgorithm)
