"""The methods as the plugin's ``fusion_bench`` commands run them: the core classes (:mod:`.core`, the
upstream contribution) with the suite's task-aware task pool completed at the start of the run
(:mod:`.suites`), the core's exceptions ended in one line under the command (:mod:`.exits`), the expected
noise of the run hidden and its profile written to the log folder (:mod:`.quiet`), and each task's inputs and
teacher outputs cached on disk (:mod:`.caching`), the learned coefficients drawn in TensorBoard (:mod:`.heatmap`),
the levers that depart from the paper (``tint_l2``: :mod:`.tint_l2`; ``select_on_holdout``: :mod:`.holdout`;
``init_from``: :mod:`.starts`), loading a saved result (``weights``: :mod:`.saved_runs`), the
sequence-classification family's ``head_projection`` (:mod:`.families`), the option ``compile_step``
(:mod:`.compiled`) and checkpoints and resume (:mod:`.resumable`)."""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

from fusion_bench import BaseModelPool, auto_register_config

from . import families  # noqa: F401  (the plugin's model families join the core's table)
from .adaptation_overlap import OverlapWarningMixin
from .caching import CachedTeacherPassMixin
from .coefficient_metrics import CoefficientMetricsTrainer
from .compiled import COMPILE_STEP_OPTION, CompiledStepMixin, CompiledTintingTrainer
from .core import algorithm
from .core.families import family_for
from .core.options import Option
from .core.tinting_options import TINTING_OPTIONS
from .data_parallel import DataParallelMixin
from .device_steps import DeviceStepTrainer
from .exits import one_line_config_errors, one_line_interruption
from .families import HEAD_PROJECTION_OPTION, FamilyOptionsMixin
from .heatmap import CoefficientHeatmapMixin
from .holdout import HOLDOUT_OPTION, HoldoutMixin, HoldoutTrainer
from .lot_merging import algorithm as lot_algorithm
from .quiet import expected_load_reports, profile_to_log_dir, quiet_run
from .resumable import RESUME_OPTIONS, ResumableMixin, ResumableTrainer
from .saved_runs import WEIGHTS_OPTION, SavedRunMixin
from .starts import START_OPTIONS, StartsMixin
from .step_profile import StepProfileMixin
from .suites import SuiteTaskPoolMixin
from .tint_l2 import TINT_L2_OPTION, TintL2Mixin, TintL2Trainer

#: the plugin's own options of Model Tinting
PLUGIN_OPTIONS = (
    *START_OPTIONS,
    TINT_L2_OPTION,
    HOLDOUT_OPTION,
    HEAD_PROJECTION_OPTION,
    COMPILE_STEP_OPTION,
    WEIGHTS_OPTION,
    *RESUME_OPTIONS,
)
#: the options of the plugin's Model Tinting: the core's and the plugin's
COMMAND_OPTIONS = TINTING_OPTIONS.extended(PLUGIN_OPTIONS)


def _one_line_constructor(core: type, more: Sequence[Option] = ()) -> Callable:
    """``core``'s constructor with its signature (the method's options) and ``more`` options of the plugin's, a
    bad option ending the command in one line before any model is loaded."""

    def __init__(self, **options):
        with one_line_config_errors():
            core.__init__(self, **options)

    signature = inspect.signature(core.__init__)
    *named, rest = signature.parameters.values()
    extra = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in more]
    __init__.__signature__ = signature.replace(parameters=[*named, *extra, rest])
    return __init__


class PluginTrainer(
    HoldoutTrainer,
    TintL2Trainer,
    DeviceStepTrainer,
    CoefficientMetricsTrainer,
    ResumableTrainer,
    CompiledTintingTrainer,
):
    """The core's loop with the plugin's options (``select_on_holdout``, ``tint_l2``, ``compile_step``), its
    steps that never wait on the host (:mod:`.device_steps`), the coefficients' figures in its logs
    (:mod:`.coefficient_metrics`) and its state for checkpoints."""


class CommandLineMethod(SuiteTaskPoolMixin):
    """A failed or interrupted run ends the command in one line; the load reports that the pool's model family
    expects are not shown."""

    def run(self, modelpool: BaseModelPool):
        with one_line_config_errors(), one_line_interruption(prints=self.fabric.is_global_zero):
            with quiet_run(expected_load_reports(family_for(modelpool, self.fabric))):
                return super().run(modelpool)

    def print_profile_summary(self, *args, **kwargs) -> None:
        """Into ``<log_dir>/profile.txt`` (printed when verbose)."""
        if not profile_to_log_dir(self, self.log_dir):
            super().print_profile_summary(*args, **kwargs)


def _command_line_tinting(core: type) -> type:
    """``core`` (Model Tinting or ++) as the plugin's commands run it, with the plugin's options
    (:data:`PLUGIN_OPTIONS`)."""
    members = {
        "__doc__": core.__doc__,
        "__module__": __name__,
        "__qualname__": core.__name__,
        "OPTIONS": COMMAND_OPTIONS,
        "__init__": _one_line_constructor(core, PLUGIN_OPTIONS),
        "trainer_class": PluginTrainer,
    }
    bases = (
        CommandLineMethod,
        CachedTeacherPassMixin,
        CoefficientHeatmapMixin,
        StartsMixin,
        SavedRunMixin,
        OverlapWarningMixin,
        HoldoutMixin,
        TintL2Mixin,
        FamilyOptionsMixin,
        CompiledStepMixin,
        ResumableMixin,
        StepProfileMixin,
        DataParallelMixin,
        core,
    )
    return auto_register_config(type(core.__name__, bases, members))


ModelTintingAlgorithm = _command_line_tinting(algorithm.ModelTintingAlgorithm)
ModelTintingPlusPlus = _command_line_tinting(algorithm.ModelTintingPlusPlus)


class LOTMergingAlgorithm(CommandLineMethod, lot_algorithm.LOTMergingAlgorithm):
    __doc__ = lot_algorithm.LOTMergingAlgorithm.__doc__
    __init__ = _one_line_constructor(lot_algorithm.LOTMergingAlgorithm)
