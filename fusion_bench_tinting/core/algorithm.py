"""Model Tinting and Model Tinting++ (arXiv 2412.19098) as FusionBench algorithms; docs/algorithm.md is the
specification. This module knows nothing of a particular model family: ``families`` adapts each kind of pool."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple, Union

import torch
from fusion_bench import BaseAlgorithm, BaseModelPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin

from .adaptation import AdaptationOptions, TintingTrainer
from .console import log_effective_options
from .errors import SaveError, TintingConfigError, explain_out_of_memory
from .fabric_glue import grad_scaler
from .families import ModelFamily, family_for
from .input_checks import reading, source_in_pool
from .losses import check_loss_for_regression
from .options import check_init_values, resolve_auto
from .preparation import MergeStart, Preparation, build_merger, load_tasks
from .results import adaptation_report, library_versions, save_result, tinted_model
from .run_state import AdaptationStats, RunPlan, TintingRun
from .teacher_pass import TeacherPass
from .tinted_model import TintedModel
from .tinting_options import TINTING_OPTIONS

DEFAULT_SEED = 42


@auto_register_config
class ModelTintingAlgorithm(LightningFabricMixin, SimpleProfilerMixin, BaseAlgorithm):
    """Model Tinting: K fine-tuned encoders merged with layer-wise coefficients, and one trainable layer per
    task (by default its head), adapted together on unlabelled inputs against the fine-tuned models' predictions.
    Every option is declared once, in :mod:`.tinting_options`, and checked when the method is built."""

    def __init__(self, **options):
        self.OPTIONS.refuse_unknown(options)  # before any model is loaded: a bad option never wastes a run
        super().__init__(**{k: v for k, v in options.items() if k not in self.OPTIONS.names})
        self._check_options()

    __init__.__signature__ = TINTING_OPTIONS.signature()

    #: the declared options (a front end that adds its own extends them: :meth:`.options.Options.extended`)
    OPTIONS = TINTING_OPTIONS
    #: the adaptation loop (a front end may pass it more settings through :meth:`_trainer_settings`)
    trainer_class = TintingTrainer

    # How, not what, a run computes (not options; the speed benchmark sets them, docs/speed.md):
    #: data-loading workers and batch size of the one preprocessing pass (auto: ``data.resolve_num_workers``)
    num_workers: Union[int, str] = "auto"
    preprocess_batch_size: int = 128
    #: computes each task's inputs and teacher outputs (the plugin's caches them)
    teacher_pass = TeacherPass
    log_every: int = 10

    # ----- options -----------------------------------------------------------------------------
    @property
    def method_name(self) -> str:
        return "model_tinting_plusplus" if self.confidence_filter else "model_tinting"

    def _check_options(self) -> None:
        """Types, ranges and combinations of every option (see :mod:`.options`)."""
        self.OPTIONS.check({name: getattr(self, name) for name in self.OPTIONS.names})
        if self._adapts and not (self.train_coefficients or self.train_tinted_layer):
            raise TintingConfigError("train_coefficients and train_tinted_layer are both false: nothing to adapt.")
        check_init_values(self.init_values, self.clamp_weights, self._clamp_range())

    @property
    def _adapts(self) -> bool:
        """Whether this run adapts (a front end may load a saved result instead: the plugin's ``weights``)."""
        return True

    @property
    def run_seed(self) -> int:
        """``method.seed``, else the program's ``seed=`` (FusionBench users set that one), else 42."""
        if self.seed is not None:
            return int(self.seed)
        program_seed = getattr(getattr(self, "_program", None), "seed", None)
        return int(program_seed) if program_seed is not None else DEFAULT_SEED

    def _clamp_range(self) -> Tuple[float, float]:
        """[0, 1], as the reference (a front end that starts elsewhere may widen it)."""
        return (0.0, 1.0)

    def _start(self) -> MergeStart:
        """Where the coefficients start: Task Arithmetic's merge (a front end may start from another)."""
        return MergeStart()

    # ----- run ---------------------------------------------------------------------------------
    def run(self, modelpool: BaseModelPool) -> TintedModel:
        """The plan for this pool -> the merger -> each task's state -> adapt -> the tinted model and report."""
        start = self._start()
        plan = self._plan(self._family(modelpool), start)
        log_effective_options(self.method_name, plan.tasks, self._resolved_values(plan))
        preparation = self._options_as(Preparation, clamp_range=self._clamp_range(), start=start)
        base = build_merger(plan, preparation, self.profile)
        states = load_tasks(plan, base, preparation, self.fabric, self.profile, with_teachers=self._adapts)
        run = TintingRun(plan, base, states, start)
        stats = self._adapt(run)
        self.print_profile_summary()
        return self._result(run, stats)

    def _family(self, modelpool: BaseModelPool) -> ModelFamily:
        return family_for(
            modelpool,
            self.fabric,
            adaptation_split=self.adaptation_data,
            taskpool=getattr(getattr(self, "_program", None), "taskpool", None),
            **self._family_options(),
        )

    def _family_options(self) -> Dict[str, Any]:
        """More keyword arguments of the model families (a front end that adds family options passes them)."""
        return {}

    def _plan(self, family: ModelFamily, start: MergeStart) -> RunPlan:
        """The pool's tasks (each checked before anything is loaded) and the values that the ``auto`` options
        stand for."""
        modelpool = family.modelpool
        tasks = family.task_names()
        split = self.adaptation_data
        for task in tasks:
            with reading(f"the {split} set of task {task!r} ({source_in_pool(modelpool, task, split)})"):
                family.validate_task(task)
        check_loss_for_regression(
            self.loss, [t for t in tasks if family.num_outputs(t) == 1 and family.task_objective(t) is None]
        )
        lr, max_steps, init_value = resolve_auto(
            self.lr,
            self.max_steps,
            self.init_values,
            family_lr=family.default_lr(self.train_tinted_layer),
            family_max_steps=family.default_max_steps,
            num_tasks=len(tasks),
            auto_init_value=start.auto_init_value,
            debug=self.is_debug_mode,
        )
        return RunPlan(family, tasks, torch.device(self.fabric.device), lr, max_steps, init_value)

    def _options_as(self, options_class: type, **given: Any) -> Any:
        """``options_class`` (a dataclass) with each field this method's attribute of that name, or ``given``."""
        names = [f.name for f in dataclasses.fields(options_class)]
        return options_class(**{name: given[name] if name in given else getattr(self, name) for name in names})

    def _adapt(self, run: TintingRun) -> Optional[AdaptationStats]:
        """Train coefficients and tinted layers (None: a front end loaded them instead)."""
        trainer = self._trainer(run)
        with (
            self.profile("adaptation"),
            explain_out_of_memory(
                f"Adaptation with batch_size={self.batch_size}",
                "Lower method.batch_size, run under fabric.precision=bf16-mixed, store the task vectors in "
                "method.task_vector_dtype=bfloat16, or keep the cached inputs on the host "
                "(method.inputs_on_device=false).",
            ),
        ):
            stats = self._train(trainer, run)
        self._log_summary(run, stats)
        return stats

    def _train(self, trainer: TintingTrainer, run: TintingRun) -> AdaptationStats:
        """The loop (a front end may wrap it, e.g. to checkpoint and resume)."""
        return trainer.run()

    def _log_summary(self, run: TintingRun, stats: AdaptationStats) -> None:
        """After the adaptation (the loop logs its figures as it goes; a front end may add a summary)."""

    def _trainer(self, run: TintingRun) -> TintingTrainer:
        """The adaptation loop over this run's merger and task states, with the pieces Fabric supplies."""
        options = self._options_as(AdaptationOptions, max_steps=run.max_steps, lr=run.plan.lr)
        pretrained, family = run.pretrained, run.family
        return self.trainer_class(
            run.merger,
            lambda params, x: family.encode(pretrained, x, params),
            run.states,
            options,
            device=run.device,
            generator=torch.Generator().manual_seed(self.run_seed),
            input_dtype=torch.float32,
            autocast=self.fabric.autocast,
            log_metrics=self._log_metrics,
            grad_scaler=grad_scaler(self.fabric),
            **self._trainer_settings(),
        )

    def _trainer_settings(self) -> Dict[str, Any]:
        """More keyword arguments of :attr:`trainer_class` (none for the core's loop)."""
        return {}

    def _resolved_values(self, plan: RunPlan) -> Dict[str, float]:
        """What the ``auto`` options stood for in this run."""
        return {"lr": plan.lr, "max_steps": plan.max_steps, "init_values": plan.init_value, "seed": self.run_seed}

    def _result(self, run: TintingRun, stats: Optional[AdaptationStats]) -> TintedModel:
        """The merged model with each task's tinted layer and its report; after an adaptation (``stats``), the
        coefficients and tinted layers, the config that reproduces them and the report saved in the log folder."""
        inputs = {s.name: len(s.inputs) for s in run.states if s.inputs is not None}
        report = {
            "method": self.method_name,
            "tinted_layer": str(self.tinted_layer),
            "adaptation_data": {"split": self.adaptation_data, "transductive": self.adaptation_data == "test"},
            "init_from": run.start.description(),
            "seed": self.run_seed,
            "versions": library_versions(),
            **({} if stats is None else adaptation_report(stats, run.plan, self.confidence_filter)),
        }
        report["adaptation_data"]["inputs_per_task"] = inputs
        model = tinted_model(run, report)
        if stats is None or not self.save_weights or not self.fabric.is_global_zero:
            return model
        config = self.config
        config.update({k: v for k, v in self._resolved_values(run.plan).items() if k != "seed"})
        try:
            save_result(self.log_dir, run, str(self.tinted_layer), config, model.report_extras)
        except OSError as error:
            raise SaveError(
                f"the result could not be written to {self.log_dir} ({type(error).__name__}: {error})."
            ) from error
        return model

    def _log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        if self.fabric.loggers:
            self.fabric.log_dict(metrics, step=step)


@auto_register_config
class ModelTintingPlusPlus(ModelTintingAlgorithm):
    """Model Tinting++: Model Tinting with the confidence filter on (see :mod:`.losses`)."""

    def __init__(self, confidence_filter: bool = True, **kwargs):
        super().__init__(confidence_filter=confidence_filter, **kwargs)
