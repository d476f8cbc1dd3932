"""Model Tinting and Model Tinting++ as FusionBench algorithms.

Model Tinting (arXiv 2412.19098) merges K fine-tuned encoders with layer-wise coefficients and gives
each task one trainable layer of its own (by default its classification head); coefficients and
tinted layers are trained together on the unlabelled test inputs against the fine-tuned models'
predictions. Model Tinting++ drops the samples where the merged model disagrees with the teacher
and is more confident than it. docs/algorithm.md is the specification.

This module knows nothing of a particular model family: ``families`` adapts each kind of model pool.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from fusion_bench import BaseAlgorithm, BaseModelPool, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin

from .adaptation import AdaptationOptions, AdaptationStats, DataParallel, TaskState, TintingTrainer
from .adamerging_start import load_adamerging_weights, resolve_adamerging_weights
from .caching import library_versions
from .checkpointing import CHECKPOINT_FOLDER, CheckpointStore, checkpoint_hook, fingerprint, resume_state
from .compiled import compile_options
from .data import AdaptationInputs, TensorInputs
from .errors import TintingConfigError, one_line_config_errors, reports_config_errors
from .families import PRETRAINED, ModelFamily, family_for
from .lot.algorithm import make_solver
from .lot.expert_pass import observe_expert
from .input_checks import check_labels, num_classes, reading, source_of
from .interrupts import AdaptationInterrupted, exit_interrupted, stop_requests
from .losses import CLASSIFICATION_LOSSES, check_loss_for_regression
from .memory import check_fits, explain_out_of_memory, merge_bytes
from .options import check_init_values, check_values, rules
from .merging import LayerWiseMerger, check_same_parameters
from .suites import ensure_task_aware_taskpool
from .surgery import SurgeryHead, check_surgery_options
from .teacher_pass import INPUT_DTYPES, TENSOR_DTYPES, TeacherPass
from .tinted_model import TintedModel
from .results import adaptation_report, load_saved, save_result, tinted_model, tinted_state
from .weights_io import check_matches, load_tinting, resolve_weights_path

log = logging.getLogger(__name__)


DEFAULT_SEED = 42
INIT_FROM = ("task_arithmetic", "lot", "adamerging")


@auto_register_config
class ModelTintingAlgorithm(LightningFabricMixin, SimpleProfilerMixin, BaseAlgorithm):
    """Model Tinting. Every option of docs/algorithm.md is a constructor argument with the reference default.

    Args:
        max_steps: adaptation iterations; each makes one optimizer step per task (``update=sequential``).
            ``auto``: the family's reference value (500 for vision).
        lr: Adam learning rate. ``auto``: 1e-2 when the tinted layer trains, 1e-3 for coefficients only.
        batch_size: unlabelled test samples per task step.
        init_values: initial merging coefficient. ``auto``: 0.3 up to 8 tasks, 0.1 above.
        clamp_weights: clamp coefficients to [0, 1] in the merge.
        tie_weights, strict: passed to ``torch.func.functional_call`` (as FusionBench's AdaMerging).
        tinted_layer: ``head`` (each task's classification head) or the index of a transformer block.
        train_coefficients, train_tinted_layer: what adapts (both: Model Tinting).
        loss: ``ce`` (teacher hard labels), ``soft_ce``, ``kl``, ``js``, ``entropy``, ``l1``,
            ``smooth_l1``, ``l2``, ``cosine``. Regression heads use the squared error.
        tie_qkv: one coefficient for a layer's q/k/v projections (parity with open_clip's fused qkv).
        update: ``sequential`` (one step per task, random task order) or ``joint`` (summed losses).
        confidence_filter: Model Tinting++'s filter (on in :class:`ModelTintingPlusPlus`).
        seed: seeds the task order, batch sampling and any random initialisation. null: the program's
            ``seed=``, else 42 (the reference sets none; a run always seeds and reports one).
        weights: a ``model_tinting.safetensors`` (or the log folder of a run) to load; skips adaptation.
        save_weights: write coefficients, tinted layers and the resolved config to the log folder.
        input_dtype: dtype of the cached preprocessed inputs. ``uint8`` (default) keeps images on their
            8-bit grid: exact, half of float16, normalised on the device at each batch (falls back to float16
            with a warning when the preprocessing is not 8-bit; token ids are integers anyway). ``float16``
            is off by up to ~1e-3 per pixel; ``float32`` is exact and twice float16.
        inputs_on_device: keep the cached inputs on the accelerator (``auto``: when they take less
            than a quarter of its free memory).
        preprocess_batch_size, num_workers: data loading for the one preprocessing and teacher pass
            (``num_workers=auto``: the main process below 1024 samples, else one worker per core but one, at most 8).
        log_every: iterations between progress-bar/logger updates (each costs one host sync).
        checkpoint_every: task steps between checkpoints in ``<log dir>/checkpoints`` (0: none).
        keep_checkpoints: how many of the newest checkpoints to keep.
        resume: a run's log folder (or its ``checkpoints/``) to continue from its newest readable
            checkpoint; refused when the model pool, tasks or options differ.
        reuse_cache: keep each task's preprocessed inputs and teacher outputs in FusionBench's cache
            folder and reuse them while the files and configs they come from are unchanged.
        init_from: ``task_arithmetic`` (the reference: ``theta_pre + sum_k lambda_k tau_k``) or ``lot``:
            the merge starts at the LOT-merged encoder, ``theta_lot + sum_k lambda_k (theta_k - theta_lot)``,
            with coefficients initialised to 0 (``init_values=auto``) and clamped to [-1, 1].
            ``adamerging``: the coefficients start from those FusionBench's layer-wise AdaMerging learned
            (``adamerging_weights``), as the reference's ``adastart``.
        lot_num_samples, lot_ridge: LOT Merging's ``num_samples`` and ``ridge`` for ``init_from=lot``.
        adamerging_weights: for ``init_from=adamerging``, the ``merging_weights.pt`` that FusionBench's
            layer-wise AdaMerging saved, or the log folder of its run.
        surgery, surgery_rank: Representation Surgery with tinting (the reference's ``--surgery``): each task's
            head reads its features through ``z - up(relu(down(z)))`` (rank 16), trained with the head.
        task_vector_dtype: dtype in which the K task vectors are stored (``bfloat16`` halves the largest
            buffer, e.g. for ViT-L/14 with 20 tasks on a smaller GPU); merges still compute in float32.
        profile_steps: time the parts of each step (data, merge, forward, backward, optimizer) in the
            profile summary; this synchronises with the device around each part, so it slows the loop.
        compile_step: ``torch.compile`` the merge and the encoder forward, one graph shared by all tasks:
            false (eager), true (default mode) or a torch.compile mode (``reduce-overhead`` adds CUDA graphs).
            The compilation (tens of seconds) counts in the adaptation time; it pays off over long runs.
        compile_backend: the ``torch.compile`` backend (``inductor``).
        evaluate_on_cached_inputs: let our CLIP task pools evaluate on the inputs preprocessed once for the
            adaptation instead of decoding every test image again, for each task whose test set they are
            (checked on three samples against the task pool's own preprocessing). Exact with
            ``input_dtype=float32`` or ``uint8``; with ``float16`` within 2e-3 of the decoded inputs.
        head_projection: ``own``: a task-specific projection that a family's classifier reads from the
            encoder (BERT's pooler) stays each task's own, part of its tinted head, and out of the merge;
            ``merged``: merged with the rest of the encoder. Families without one ignore it.
        coefficient_lr: a learning rate of the merging coefficients apart from the tinted layers' (a second
            Adam group); null: one group with ``lr``, as the reference.
        zero_grad: ``none`` (gradients dropped before each step: Adam leaves the other tasks' tinted layers
            alone) or ``zero`` (zeroed, as torch 1.x did in the reference code: Adam keeps moving every
            task's tinted layer on its momentum at every step).
        empty_batch: a Model Tinting++ batch with no kept sample: ``skip`` the step, or ``step`` on zero
            gradients as the reference does (momentum moves the parameters; the step count advances).
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

    def _tinted_block_index(self) -> Optional[int]:
        if self.tinted_layer == "head":
            return None
        try:
            index = int(self.tinted_layer)
        except (TypeError, ValueError):
            raise TintingConfigError(
                f"tinted_layer={self.tinted_layer!r}: use 'head' or the index of a transformer block."
            ) from None
        if isinstance(self.tinted_layer, bool) or index < 0:
            raise TintingConfigError(f"tinted_layer={self.tinted_layer!r}: a block index is a non-negative integer.")
        return index

    def _resolved(self, family: ModelFamily, num_tasks: int):
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
        family = family_for(modelpool, self.fabric)
        family.functional_call_kwargs = {"tie_weights": self.tie_weights, "strict": self.strict}
        family.head_projection = self.head_projection
        device = torch.device(self.fabric.device)
        tasks = family.task_names()
        for task in tasks:
            with reading(f"the test set of task {task!r} ({self._source(family, task, 'test')})"):
                family.validate_task(task)
        check_loss_for_regression(self.loss, [t for t in tasks if family.num_outputs(t) == 1])
        lr, max_steps, init_value = self._resolved(family, len(tasks))
        saved = load_tinting(self.weights) if self.weights else None

        with self.profile("load pretrained"):
            with reading(f"the pretrained model ({self._source(family, PRETRAINED)})"):
                pretrained = family.load_encoder(PRETRAINED)
        block_names = self._block_parameter_names(family, pretrained)
        head_encoder_names = family.head_encoder_parameter_names(pretrained)
        merged_names = [n for n in family.merged_parameter_names(pretrained) if n not in set(head_encoder_names)]
        pretrained_params = dict(pretrained.named_parameters())
        check_fits(
            device,
            merge_bytes(sum(pretrained_params[n].numel() for n in merged_names), len(tasks), TENSOR_DTYPES[self.task_vector_dtype]),
            f"Merging {len(tasks)} task vectors of {len(merged_names)} tensors",
            "Store the task vectors in half precision (method.task_vector_dtype=bfloat16), merge fewer tasks, "
            "or run on a device with more memory.",
        )
        merger = LayerWiseMerger(
            {n: pretrained_params[n] for n in merged_names},
            len(tasks),
            init_value=init_value,
            clamp=self.clamp_weights,
            # from LOT, a negative coefficient (away from expert k) is a real direction; a clamp at 0
            # would also freeze every coefficient that starts at 0 and takes one step below it
            clamp_range=self._clamp_range(),
            coefficient_groups=[family.coefficient_group(n, self.tie_qkv) for n in merged_names],
            task_vector_dtype=TENSOR_DTYPES[self.task_vector_dtype],
        ).to(device)
        if self.init_from == "adamerging":
            with torch.no_grad():
                merger.coefficients.copy_(load_adamerging_weights(self.adamerging_weights, tasks, merger.group_names))
        pretrained.to(device)

        lot = None
        if self.init_from == "lot":
            lot = make_solver(pretrained, merged_names, ridge=self.lot_ridge, fallback_scale="auto",
                              statistics_dtype="float64", device=device)
        heads, head_encoders, inputs, teachers = self._task_vectors_and_teachers(
            family, tasks, merger, pretrained_params, device, teachers=saved is None, lot=lot,
            head_encoder_names=head_encoder_names,
        )
        check_loss_for_regression(self.loss, [t for t, head in heads.items() if family.is_regression(head)])
        states = self._task_states(tasks, heads, head_encoders, merger, block_names, inputs, teachers)
        if saved is not None:
            check_matches(
                saved,
                task_names=tasks,
                coefficient_groups=merger.group_names,
                tinted_layer=str(self.tinted_layer),
                tinted_shapes={s.name: {k: v.shape for k, v in tinted_state(s).items()} for s in states},
                origin=self._origin(),
            )
            load_saved(saved, merger, states)
            stats = None
        else:
            with self.profile("adaptation"), explain_out_of_memory(
                f"Adaptation with batch_size={self.batch_size}",
                "Lower method.batch_size, run under fabric.precision=bf16-mixed, store the task vectors in "
                "method.task_vector_dtype=bfloat16, or keep the cached inputs on the host (method.inputs_on_device=false).",
            ):
                try:
                    stats = self._adapt(family, pretrained, merger, states, device, lr, max_steps)
                except AdaptationInterrupted as interrupted:
                    exit_interrupted(interrupted, self.log_dir, self.fabric.is_global_zero)
        self.print_profile_summary()

        model = self._result(pretrained, merger, states, block_names, stats, lr, max_steps, init_value)
        ensure_task_aware_taskpool(self._program)
        return model

    # ----- pieces ------------------------------------------------------------------------------
    def _task_vectors_and_teachers(
        self, family, tasks, merger, pretrained_params, device, teachers: bool, lot=None, head_encoder_names=()
    ):
        """Load each fine-tuned model once: keep its head (and the encoder tensors that belong to it),
        store its task vector, feed LOT's statistics (``init_from=lot``) and, unless adaptation is
        skipped, keep the task's preprocessed inputs and the teacher's outputs on them. Then let it go."""
        heads: Dict[str, nn.Module] = {}
        head_encoders: Dict[str, Dict[str, Tensor]] = {}
        inputs: Dict[str, AdaptationInputs] = {}
        outputs: Dict[str, Tensor] = {}
        teacher_pass = TeacherPass(
            self.fabric, self.input_dtype, self.preprocess_batch_size, self.num_workers, self.reuse_cache,
            self.inputs_on_device, self.profile,
        )
        for index, task in enumerate(tqdm(tasks, desc="Task vectors and teacher outputs", dynamic_ncols=True)):
            with self.profile("load fine-tuned"):
                with reading(f"the model of task {task!r} ({self._source(family, task)})"):
                    finetuned = family.load_encoder(task)
                    heads[task] = family.load_head(task)
            self._check_test_set(family, task, heads[task])
            finetuned_params = dict(finetuned.named_parameters())
            check_same_parameters(pretrained_params, finetuned_params, task)
            merger.set_task_vector(index, finetuned_params)
            head_encoders[task] = {n: finetuned_params[n].detach().float().to(device) for n in head_encoder_names}
            if lot is not None:
                with self.profile("LOT statistics"):
                    observe_expert(
                        lot, family, task, pretrained_params, finetuned, num_samples=self.lot_num_samples,
                        seed=self.run_seed, batch_size=self.preprocess_batch_size, num_workers=self.num_workers,
                        device=device,
                    )
            if teachers:
                inputs[task], outputs[task] = teacher_pass(family, task, finetuned, heads[task], device)
            del finetuned  # the fine-tuned encoders never stay on the device
        if lot is not None:
            with self.profile("LOT solve"):
                merger.rebase(lot.task_vector())
        merger.check_complete()
        return heads, head_encoders, inputs, outputs

    @staticmethod
    def _source(family: ModelFamily, name: str, kind: str = "model") -> str:
        configs = getattr(family.modelpool, "_test_datasets" if kind == "test" else "_models", None) or {}
        return source_of(configs.get(name)) if name in configs else "not configured"

    def _check_test_set(self, family: ModelFamily, task: str, head: nn.Module) -> None:
        """Before any adaptation: the test set's labels are the head's classes."""
        source = self._source(family, task, "test")
        with reading(f"the test set of task {task!r} ({source})"):
            labels = family.test_labels(task)
        check_labels(task, labels, num_classes(head), source)

    def _fingerprint(self, modelpool, tasks) -> dict:
        return fingerprint(tasks, OmegaConf.to_container(modelpool.config, resolve=True), OmegaConf.to_container(self.config))

    def _adapt(self, family, pretrained, merger, states, device, lr, max_steps) -> AdaptationStats:
        trainer = TintingTrainer(
            merger,
            lambda params, x: family.encode(pretrained, x, params),
            states,
            AdaptationOptions(
                max_steps=max_steps,
                lr=lr,
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
            ),
            device=device,
            generator=torch.Generator().manual_seed(self.run_seed),
            input_dtype=torch.float32,
            autocast=self.fabric.autocast,
            log_metrics=self._log_metrics,
            data_parallel=self._data_parallel(),
            section=self._synchronised_section if self.profile_steps else (lambda name: contextlib.nullcontext()),
            compile_options=compile_options(self.compile_step, self.compile_backend),
            grad_scaler=self._grad_scaler(),
        )
        run_fingerprint = self._fingerprint(family.modelpool, [s.name for s in states])
        if self.resume:
            state, path = resume_state(self.resume, run_fingerprint, max_steps)
            trainer.load_state_dict(state)
            log.info("Resumed from %s (iteration %d, %d task steps done).", path, trainer.iteration, trainer.visits)
        store = None
        if self.log_dir is not None:
            store = CheckpointStore(Path(self.log_dir) / CHECKPOINT_FOLDER, keep=self.keep_checkpoints)
        elif self.checkpoint_every > 0:
            log.warning("No log folder (no Fabric logger): checkpoints are not written.")
        with stop_requests() as stop:
            hook = checkpoint_hook(store, self.checkpoint_every, run_fingerprint, stop, self.fabric.is_global_zero)
            return trainer.run(on_visit=hook)

    def _grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """Fabric's gradient scaler under fp16 autocast (``fabric.precision=16-mixed``, as the SyMerge
        version of the method trains): our loop calls backward and step itself, so it scales the loss
        with it. None for other precisions (bf16 and fp32 need no scaling)."""
        precision = self.fabric.strategy.precision
        return getattr(precision, "scaler", None) if getattr(precision, "precision", None) == "16-mixed" else None

    @contextlib.contextmanager
    def _synchronised_section(self, name: str):
        """A profiled part of a step, with the device synchronised on both sides so the time is its own."""
        synchronize = torch.cuda.synchronize if torch.device(self.fabric.device).type == "cuda" else (lambda: None)
        synchronize()
        with self.profile(f"step: {name}"):
            yield
            synchronize()

    def _data_parallel(self) -> DataParallel:
        """Data-parallel adaptation over Fabric's processes (``fabric.devices=N``, DDP strategies)."""
        fabric = self.fabric
        if fabric.world_size == 1:
            return DataParallel()
        if self.batch_size < fabric.world_size:
            raise TintingConfigError(
                f"batch_size={self.batch_size} is smaller than the {fabric.world_size} data-parallel processes: "
                "every process needs at least one sample of each batch."
            )
        log.info("Data-parallel adaptation over %d processes (rank %d).", fabric.world_size, fabric.global_rank)
        return DataParallel(
            rank=fabric.global_rank,
            world_size=fabric.world_size,
            all_reduce_sum=lambda tensor: fabric.all_reduce(tensor, reduce_op="sum"),
        )

    def _block_parameter_names(self, family: ModelFamily, encoder: nn.Module) -> List[str]:
        index = self._tinted_block_index()
        if index is None:
            return []
        prefixes = family.block_prefixes(encoder)
        if index >= len(prefixes):
            raise TintingConfigError(
                f"tinted_layer={index} is out of range: the encoder has {len(prefixes)} transformer blocks "
                f"(indices 0..{len(prefixes) - 1})."
            )
        return [n for n, _ in encoder.named_parameters() if n.startswith(prefixes[index])]

    def _task_states(self, tasks, heads, head_encoders, merger, block_names, inputs, teachers) -> List[TaskState]:
        surgery_generator = torch.Generator().manual_seed(self.run_seed)
        initial = None
        if block_names:
            with torch.no_grad():
                merged = merger()
                initial = {n: merged[n].detach().clone() for n in block_names}
        states = []
        for task in tasks:
            if block_names:  # the task's own copy of the block, from the merged weights at init
                head = heads[task]
                block = {n: nn.Parameter(v.clone()) for n, v in initial.items()}
            else:  # the task's head becomes trainable; the teacher keeps the original
                head = copy.deepcopy(heads[task])
                if self.surgery:
                    head = SurgeryHead(head, self.surgery_rank, surgery_generator)
                block = {}
            states.append(
                TaskState(
                    name=task,
                    inputs=inputs.get(task, TensorInputs(torch.empty(0))),
                    teacher=teachers.get(task, torch.empty(0, 1)),
                    head=head,
                    block=block,
                    head_encoder={n: nn.Parameter(v.clone()) for n, v in head_encoders[task].items()},
                )
            )
        return states

    def _result(self, pretrained, merger, states, block_names, stats: Optional[AdaptationStats], lr, max_steps, init):
        """The merged model with each task's tinted layer, its report, and (after an adaptation) the saved
        coefficients and tinted layers with the config that reproduces them."""
        report = {
            "method": self.method_name,
            "tinted_layer": str(self.tinted_layer),
            "init_from": self._start_description(),
            "seed": self.run_seed,
            "versions": library_versions(),
        }
        if stats is None:
            report["weights_loaded_from"] = os.path.abspath(resolve_weights_path(self.weights))
        else:
            report.update(adaptation_report(stats, iterations=max_steps, lr=lr, init_values=init,
                                             compile_step=self.compile_step, confidence_filter=self.confidence_filter))
        model = tinted_model(pretrained, merger, states, block_names, report)
        if stats is None:
            return model
        if self.evaluate_on_cached_inputs:
            model.evaluation_inputs = {state.name: state.inputs for state in states}
        if self.save_weights and self.fabric.is_global_zero and save_result(
            self.log_dir, merger, states, str(self.tinted_layer), self._origin()
        ):
            config = self.config
            config.update({"lr": lr, "max_steps": max_steps, "init_values": init})  # what `auto` stood for
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
