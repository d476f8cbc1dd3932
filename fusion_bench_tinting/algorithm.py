"""Model Tinting and Model Tinting++ as FusionBench algorithms.

Model Tinting (arXiv 2412.19098) merges K fine-tuned encoders with layer-wise coefficients and gives
each task one trainable layer of its own (by default its classification head); coefficients and
tinted layers are trained together on the unlabelled test inputs against the fine-tuned models'
predictions. Model Tinting++ drops the samples where the merged model disagrees with the teacher
and is more confident than it. docs/algorithm.md is the specification.

This module knows nothing of a particular model family: ``families`` adapts each kind of model pool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from omegaconf import OmegaConf
from lightning.fabric.utilities.rank_zero import rank_zero_only
from tqdm.auto import tqdm

from fusion_bench import BaseAlgorithm, BaseModelPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin
from fusion_bench.utils.pylogger import get_rankzero_logger

from .adamerging_start import load_adamerging_weights, resolve_adamerging_weights
from .adaptation import AdaptationOptions, TintingTrainer
from .caching import library_versions
from .checkpointing import CHECKPOINT_FOLDER, CheckpointStore, checkpoint_hook, fingerprint, resume_state
from .compiled import compile_options
from .errors import TintingConfigError, one_line_config_errors, reports_config_errors
from .fabric_glue import data_parallel, grad_scaler, log_coefficient_heatmap, log_hyperparameters, step_sections
from .families import PRETRAINED, ModelFamily, family_for
from .input_checks import check_test_set, reading, source_in_pool
from .interrupts import AdaptationInterrupted, exit_interrupted, stop_requests
from .losses import CLASSIFICATION_LOSSES, check_loss_for_regression
from .lot.algorithm import make_solver
from .lot.expert_pass import observe_expert
from .memory import check_fits, explain_out_of_memory, merge_bytes
from .merging import LayerWiseMerger, check_same_parameters
from .options import check_init_values, check_values, rules
from .results import adaptation_report, load_saved, save_result, tinted_model, tinted_state
from .run_state import TaskMaterial, TintingRun, block_parameter_names, task_states
from .suites import SuiteTaskPoolMixin
from .surgery import check_surgery_options
from .teacher_pass import INPUT_DTYPES, TENSOR_DTYPES, TeacherPass
from .tinted_model import TintedModel
from .weights_io import check_matches, load_tinting, resolve_weights_path

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only


DEFAULT_SEED = 42
INIT_FROM = ("task_arithmetic", "lot", "adamerging")


@auto_register_config
class ModelTintingAlgorithm(SuiteTaskPoolMixin, LightningFabricMixin, SimpleProfilerMixin, BaseAlgorithm):
    """Model Tinting (docs/algorithm.md): layer-wise merging coefficients and one trainable layer per task,
    adapted together on the unlabelled test inputs against the fine-tuned models' predictions.

    Every option, its default (the reference implementation's) and what it allows is described once, in
    ``config/method/model_tinting.yaml``; :mod:`.options` checks them when the method is built.
    ``run`` follows FusionBench's AdaMerging: resolve options -> build the merger -> each task's head, task
    vector, inputs and teacher outputs -> adapt (or load saved weights) -> the tinted model and its report.
    """

    def __init__(
        self,
        max_steps: Union[int, str] = "auto",
        lr: Union[float, str] = "auto",
        batch_size: int = 32,
        init_values: Union[float, str] = "auto",
        clamp_weights: bool = True,
        tie_weights: bool = True,
        strict: bool = False,
        tinted_layer: Union[str, int] = "head",
        train_coefficients: bool = True,
        train_tinted_layer: bool = True,
        loss: str = "ce",
        tie_qkv: bool = False,
        update: str = "sequential",
        confidence_filter: bool = False,
        seed: Optional[int] = None,
        weights: Optional[str] = None,
        save_weights: bool = True,
        input_dtype: str = "uint8",
        inputs_on_device: Union[bool, str] = "auto",
        preprocess_batch_size: int = 128,
        num_workers: Union[int, str] = "auto",
        log_every: int = 10,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 2,
        resume: Optional[str] = None,
        reuse_cache: bool = True,
        init_from: str = "task_arithmetic",
        lot_num_samples: int = 64,
        lot_ridge: float = 1e-4,
        task_vector_dtype: str = "float32",
        profile_steps: bool = False,
        compile_step: Union[bool, str] = False,
        compile_backend: str = "inductor",
        evaluate_on_cached_inputs: bool = False,
        head_projection: str = "own",
        coefficient_lr: Union[float, str, None] = None,
        zero_grad: str = "none",
        empty_batch: str = "skip",
        adamerging_weights: Optional[str] = None,
        surgery: bool = False,
        surgery_rank: int = 16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        with one_line_config_errors():
            self._check_options()  # before any model is loaded: a bad option never wastes a run

    # ----- options -----------------------------------------------------------------------------
    @property
    def method_name(self) -> str:
        return "model_tinting_plusplus" if self.confidence_filter else "model_tinting"

    def _check_options(self) -> None:
        """Types, ranges and combinations of every option (see :mod:`.options`)."""
        option_rules = rules(CLASSIFICATION_LOSSES, INPUT_DTYPES, TENSOR_DTYPES, INIT_FROM)
        check_values({name: getattr(self, name) for name in option_rules}, option_rules)
        if not (self.train_coefficients or self.train_tinted_layer) and self.weights is None:
            raise TintingConfigError("train_coefficients and train_tinted_layer are both false: nothing to adapt.")
        check_init_values(self.init_values, self.clamp_weights, self._clamp_range())
        compile_options(self.compile_step, self.compile_backend)  # raises on a bad mode
        check_surgery_options(self.surgery, self.tinted_layer, self.train_tinted_layer)
        if self.init_from == "adamerging":
            resolve_adamerging_weights(self.adamerging_weights)  # the file exists, before any model is loaded
            if self.init_values != "auto":
                raise TintingConfigError(
                    f"init_values={self.init_values!r} with init_from=adamerging: the initial coefficients are "
                    "AdaMerging's (adamerging_weights); leave init_values=auto."
                )

    @property
    def run_seed(self) -> int:
        """``method.seed``, else the program's ``seed=`` (FusionBench users set that one), else 42."""
        if self.seed is not None:
            return int(self.seed)
        program_seed = getattr(getattr(self, "_program", None), "seed", None)
        return int(program_seed) if program_seed is not None else DEFAULT_SEED

    def _clamp_range(self) -> Tuple[float, float]:
        """[0, 1] as the reference; from LOT, a negative coefficient (away from expert k) is a real direction."""
        return (-1.0, 1.0) if self.init_from == "lot" else (0.0, 1.0)

    def _resolved(self, family: ModelFamily, num_tasks: int) -> Tuple[float, int, float]:
        """Learning rate, iterations and initial coefficient, with ``auto`` replaced by the family's reference."""
        lr = family.default_lr(self.train_tinted_layer) if self.lr == "auto" else float(self.lr)
        steps = family.default_max_steps if self.max_steps == "auto" else int(self.max_steps)
        if self.init_values != "auto":
            init = float(self.init_values)
        elif self.init_from == "lot":
            init = 0.0  # start exactly at the LOT-merged encoder
        else:
            init = 0.3 if num_tasks <= 8 else 0.1
        if self.is_debug_mode:
            steps = min(steps, 1)
        return lr, steps, init

    # ----- run ---------------------------------------------------------------------------------
    @reports_config_errors
    def run(self, modelpool: BaseModelPool) -> TintedModel:
        self._check_options()
        run = self._setup(modelpool)
        saved = load_tinting(self.weights) if self.weights else None
        self._build_merger(run)
        self._load_tasks(run, with_teachers=saved is None)
        if saved is not None:
            self._load_saved(run, saved)
        else:
            self._adapt(run)
        self.print_profile_summary()
        return self._result(run)

    def _setup(self, modelpool: BaseModelPool) -> TintingRun:
        """The model family of the pool, its tasks (each checked before anything is loaded) and the values
        that the ``auto`` options stand for."""
        family = family_for(modelpool, self.fabric)
        family.functional_call_kwargs = {"tie_weights": self.tie_weights, "strict": self.strict}
        family.head_projection = self.head_projection
        tasks = family.task_names()
        for task in tasks:
            with reading(f"the test set of task {task!r} ({source_in_pool(modelpool, task, 'test')})"):
                family.validate_task(task)
        check_loss_for_regression(self.loss, [t for t in tasks if family.num_outputs(t) == 1])
        lr, max_steps, init_value = self._resolved(family, len(tasks))
        return TintingRun(family, tasks, torch.device(self.fabric.device), lr, max_steps, init_value)

    def _build_merger(self, run: TintingRun) -> None:
        """The pretrained encoder and the layer-wise merger over its merged tensors (no task vector yet)."""
        family = run.family
        with self.profile("load pretrained"):
            with reading(f"the pretrained model ({source_in_pool(family.modelpool, PRETRAINED)})"):
                run.pretrained = family.load_encoder(PRETRAINED)
        run.block_names = block_parameter_names(family, run.pretrained, self.tinted_layer)
        run.head_encoder_names = family.head_encoder_parameter_names(run.pretrained)
        merged_names = [n for n in family.merged_parameter_names(run.pretrained) if n not in set(run.head_encoder_names)]
        params = dict(run.pretrained.named_parameters())
        dtype = TENSOR_DTYPES[self.task_vector_dtype]
        check_fits(
            run.device,
            merge_bytes(sum(params[n].numel() for n in merged_names), len(run.tasks), dtype),
            f"Merging {len(run.tasks)} task vectors of {len(merged_names)} tensors",
            "Store the task vectors in half precision (method.task_vector_dtype=bfloat16), merge fewer tasks, "
            "or run on a device with more memory.",
        )
        run.merger = LayerWiseMerger(
            {n: params[n] for n in merged_names},
            len(run.tasks),
            init_value=run.init_value,
            clamp=self.clamp_weights,
            clamp_range=self._clamp_range(),
            coefficient_groups=[family.coefficient_group(n, self.tie_qkv) for n in merged_names],
            task_vector_dtype=dtype,
        ).to(run.device)
        if self.init_from == "adamerging":
            with torch.no_grad():
                run.merger.coefficients.copy_(load_adamerging_weights(self.adamerging_weights, run.tasks, run.merger.group_names))
        run.pretrained.to(run.device)

    def _load_tasks(self, run: TintingRun, with_teachers: bool) -> None:
        """Load each fine-tuned model once: keep its head (and the encoder tensors that belong to it), store its
        task vector, feed LOT's statistics (``init_from=lot``) and, unless adaptation is skipped, keep the
        task's preprocessed inputs and the teacher's outputs on them. Then let it go."""
        family, merger, device = run.family, run.merger, run.device
        pretrained_params = dict(run.pretrained.named_parameters())
        lot = None
        if self.init_from == "lot":
            lot = make_solver(run.pretrained, merger.names, ridge=self.lot_ridge, fallback_scale="auto",
                              statistics_dtype="float64", device=device)
        teacher_pass = TeacherPass(
            self.fabric, self.input_dtype, self.preprocess_batch_size, self.num_workers, self.reuse_cache,
            self.inputs_on_device, self.profile,
        )
        material = TaskMaterial()
        for index, task in enumerate(tqdm(run.tasks, desc="Task vectors and teacher outputs", dynamic_ncols=True,
                                            disable=rank_zero_only.rank != 0)):
            with self.profile("load fine-tuned"):
                with reading(f"the model of task {task!r} ({source_in_pool(family.modelpool, task)})"):
                    finetuned = family.load_encoder(task)
                    material.heads[task] = family.load_head(task)
            check_test_set(family, task, material.heads[task])
            finetuned_params = dict(finetuned.named_parameters())
            check_same_parameters(pretrained_params, finetuned_params, task)
            merger.set_task_vector(index, finetuned_params)
            material.head_encoders[task] = {n: finetuned_params[n].detach().float().to(device) for n in run.head_encoder_names}
            if lot is not None:
                with self.profile("LOT statistics"):
                    observe_expert(
                        lot, family, task, pretrained_params, finetuned, num_samples=self.lot_num_samples,
                        seed=self.run_seed, batch_size=self.preprocess_batch_size, num_workers=self.num_workers,
                        device=device,
                    )
            if with_teachers:
                material.inputs[task], material.teachers[task] = teacher_pass(family, task, finetuned, material.heads[task], device)
            del finetuned  # the fine-tuned encoders never stay on the device
        if lot is not None:
            with self.profile("LOT solve"):
                merger.rebase(lot.task_vector())
        merger.check_complete()
        check_loss_for_regression(self.loss, [t for t, head in material.heads.items() if family.is_regression(head)])
        surgery_rank = self.surgery_rank if self.surgery else None
        run.states = task_states(run.tasks, material, merger, run.block_names, surgery_rank, self.run_seed)

    def _load_saved(self, run: TintingRun, saved) -> None:
        """Coefficients and tinted layers of a saved run (``method.weights``), checked to fit this one."""
        check_matches(
            saved,
            task_names=run.tasks,
            coefficient_groups=run.merger.group_names,
            tinted_layer=str(self.tinted_layer),
            tinted_shapes={s.name: {k: v.shape for k, v in tinted_state(s).items()} for s in run.states},
            origin=self._origin(),
        )
        load_saved(saved, run.merger, run.states)

    def _adapt(self, run: TintingRun) -> None:
        """Train coefficients and tinted layers (resuming from ``method.resume``, checkpointing as asked); on
        Ctrl-C or SIGTERM, a last checkpoint and one line on how to continue."""
        trainer = self._trainer(run)
        run_fingerprint = fingerprint(
            run.tasks, OmegaConf.to_container(run.family.modelpool.config, resolve=True), OmegaConf.to_container(self.config)
        )
        if self.resume:
            state, path = resume_state(self.resume, run_fingerprint, run.max_steps, self.fabric)
            trainer.load_state_dict(state)
            log.info("Resumed from %s (iteration %d, %d task steps done).", path, trainer.iteration, trainer.visits)
        store = None
        if self.log_dir is not None:
            store = CheckpointStore(Path(self.log_dir) / CHECKPOINT_FOLDER, keep=self.keep_checkpoints, fabric=self.fabric)
        elif self.checkpoint_every > 0:
            log.warning("No log folder (no Fabric logger): checkpoints are not written.")
        with self.profile("adaptation"), explain_out_of_memory(
            f"Adaptation with batch_size={self.batch_size}",
            "Lower method.batch_size, run under fabric.precision=bf16-mixed, store the task vectors in "
            "method.task_vector_dtype=bfloat16, or keep the cached inputs on the host (method.inputs_on_device=false).",
        ), stop_requests() as stop:
            hook = checkpoint_hook(store, self.checkpoint_every, run_fingerprint, stop, self.fabric, self.log_every)
            try:
                run.stats = trainer.run(on_visit=hook)
            except AdaptationInterrupted as interrupted:
                exit_interrupted(interrupted, self.log_dir, self.fabric.is_global_zero)
        self._log_run_summary(run)

    def _log_run_summary(self, run: TintingRun) -> None:
        """The options with the final loss (TensorBoard's HPARAMS tab) and the coefficients as a heat map."""
        resolved = {"lr": run.lr, "max_steps": run.max_steps, "init_values": run.init_value, "seed": self.run_seed}
        losses = list(run.stats.final_loss.values())
        log_hyperparameters(
            self.fabric, {**OmegaConf.to_container(self.config), **resolved, "tasks": ",".join(run.tasks)},
            {"hparams/final_loss": sum(losses) / len(losses)},
        )
        coefficients = run.merger.effective_coefficients().detach()
        log_coefficient_heatmap(self.fabric, coefficients, run.tasks, run.merger.group_names, run.max_steps)

    def _trainer(self, run: TintingRun) -> TintingTrainer:
        options = AdaptationOptions(
            max_steps=run.max_steps,
            lr=run.lr,
            batch_size=self.batch_size,
            loss=self.loss,
            update=self.update,
            confidence_filter=self.confidence_filter,
            train_coefficients=self.train_coefficients,
            train_tinted_layer=self.train_tinted_layer,
            log_every=self.log_every,
            coefficient_lr=None if self.coefficient_lr is None else float(self.coefficient_lr),
            zero_grad=self.zero_grad,
            empty_batch=self.empty_batch,
        )
        pretrained, family = run.pretrained, run.family
        return TintingTrainer(
            run.merger,
            lambda params, x: family.encode(pretrained, x, params),
            run.states,
            options,
            device=run.device,
            generator=torch.Generator().manual_seed(self.run_seed),
            input_dtype=torch.float32,
            autocast=self.fabric.autocast,
            log_metrics=self._log_metrics,
            data_parallel=data_parallel(self.fabric, self.batch_size),
            section=step_sections(self.fabric, self.profile, self.profile_steps),
            compile_options=compile_options(self.compile_step, self.compile_backend),
            grad_scaler=grad_scaler(self.fabric),
        )

    def _result(self, run: TintingRun) -> TintedModel:
        """The merged model with each task's tinted layer, its report, and (after an adaptation) the saved
        coefficients and tinted layers with the config that reproduces them."""
        report = {
            "method": self.method_name,
            "tinted_layer": str(self.tinted_layer),
            "init_from": self._start_description(),
            "seed": self.run_seed,
            "versions": library_versions(),
        }
        if run.stats is None:
            report["weights_loaded_from"] = os.path.abspath(resolve_weights_path(self.weights))
        else:
            report.update(adaptation_report(run.stats, iterations=run.max_steps, lr=run.lr, init_values=run.init_value,
                                            compile_step=self.compile_step, confidence_filter=self.confidence_filter))
        model = tinted_model(run.pretrained, run.merger, run.states, run.block_names, report)
        if run.stats is None:
            return model
        if self.evaluate_on_cached_inputs:
            model.evaluation_inputs = {state.name: state.inputs for state in run.states}
        if self.save_weights and self.fabric.is_global_zero and save_result(
            self.log_dir, run.merger, run.states, str(self.tinted_layer), self._origin()
        ):
            config = self.config
            config.update({"lr": run.lr, "max_steps": run.max_steps, "init_values": run.init_value})  # what `auto` stood for
            OmegaConf.save(config, os.path.join(self.log_dir, "model_tinting_config.yaml"))
        return model

    def _origin(self) -> str:
        """What the coefficients are relative to (saved with the weights, checked when loading them)."""
        if self.init_from == "lot":
            return f"lot(num_samples={self.lot_num_samples}, ridge={float(self.lot_ridge)}, seed={self.run_seed})"
        return "task_arithmetic"

    def _start_description(self) -> str:
        """Where the coefficients started, for the report."""
        if self.init_from == "adamerging":
            return f"adamerging({os.path.abspath(resolve_adamerging_weights(self.adamerging_weights))})"
        return self._origin()

    def _log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        if self.fabric.loggers:
            self.fabric.log_dict(metrics, step=step)


@auto_register_config
class ModelTintingPlusPlus(ModelTintingAlgorithm):
    """Model Tinting++: Model Tinting with the confidence filter on (see :mod:`.losses`)."""

    def __init__(self, confidence_filter: bool = True, **kwargs):
        super().__init__(confidence_filter=confidence_filter, **kwargs)
