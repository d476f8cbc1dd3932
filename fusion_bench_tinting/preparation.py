"""Everything a tinting run needs before its first step: the merger over the pretrained encoder, and from
each fine-tuned model its task vector, head, test inputs and teacher outputs.

Each fine-tuned model is loaded once and let go after its turn, so at most one fine-tuned encoder is in
memory at any time. With ``init_from=lot`` the same pass feeds LOT Merging's statistics; the merger is then
rebased on LOT's task vector before adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Optional, Tuple, Union

import torch

from .adamerging_start import load_adamerging_weights
from .console import progress
from .families import PRETRAINED
from .finite import check_finite
from .input_checks import check_test_set, reading, source_in_pool
from .losses import check_loss_for_regression
from .lot.algorithm import LOT_START, make_solver
from .lot.expert_pass import observe_expert
from .memory import check_fits, merge_bytes
from .merging import LayerWiseMerger, check_same_parameters
from .run_state import TaskMaterial, TintingRun, block_parameter_names, task_states
from .teacher_pass import TENSOR_DTYPES, TeacherPass

Profile = Callable[[str], ContextManager]


@dataclass
class Preparation:
    """The method options that shape the merger and the per-task material (see the method's YAML)."""

    tinted_layer: Union[str, int]
    clamp_weights: bool
    clamp_range: Tuple[float, float]
    task_vector_dtype: str
    init_from: str
    adamerging_weights: Optional[str]
    loss: str
    seed: int
    input_dtype: str
    preprocess_batch_size: int
    num_workers: Union[int, str]
    reuse_cache: bool
    inputs_on_device: Union[bool, str]


def build_merger(run: TintingRun, options: Preparation, profile: Profile) -> None:
    """The pretrained encoder and the layer-wise merger over its merged tensors (no task vector yet)."""
    family = run.family
    with profile("load pretrained"):
        with reading(f"the pretrained model ({source_in_pool(family.modelpool, PRETRAINED)})"):
            run.pretrained = family.load_encoder(PRETRAINED)
        check_finite(
            dict(run.pretrained.named_parameters()),
            f"the pretrained model ({source_in_pool(family.modelpool, PRETRAINED)})",
        )
    run.block_names = block_parameter_names(family, run.pretrained, options.tinted_layer)
    run.head_encoder_names = family.head_encoder_parameter_names(run.pretrained)
    own = set(run.head_encoder_names)
    merged_names = [n for n in family.merged_parameter_names(run.pretrained) if n not in own]
    params = dict(run.pretrained.named_parameters())
    dtype = TENSOR_DTYPES[options.task_vector_dtype]
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
        clamp=options.clamp_weights,
        clamp_range=options.clamp_range,
        task_vector_dtype=dtype,
    ).to(run.device)
    if options.init_from == "adamerging":
        start = load_adamerging_weights(
            options.adamerging_weights, run.tasks, run.merger.group_names, family.merged_parameter_names(run.pretrained)
        )
        with torch.no_grad():
            run.merger.coefficients.copy_(start)
    run.pretrained.to(run.device)


def load_tasks(run: TintingRun, options: Preparation, fabric, profile: Profile, with_teachers: bool) -> None:
    """Load each fine-tuned model once: keep its head (and the encoder tensors that belong to it), store its
    task vector, feed LOT's statistics (``init_from=lot``) and, unless adaptation is skipped, keep the
    task's preprocessed inputs and the teacher's outputs on them. Then let it go."""
    family, merger, device = run.family, run.merger, run.device
    pretrained_params = dict(run.pretrained.named_parameters())
    lot = None
    if options.init_from == "lot":
        lot = make_solver(
            run.pretrained,
            merger.names,
            ridge=LOT_START["ridge"],
            fallback_scale="auto",
            statistics_dtype="float64",
            device=device,
        )
    teacher_pass = TeacherPass(
        fabric,
        options.input_dtype,
        options.preprocess_batch_size,
        options.num_workers,
        options.reuse_cache,
        options.inputs_on_device,
        profile,
    )
    material = TaskMaterial()
    for index, task in enumerate(progress(run.tasks, desc="Task vectors and teacher outputs")):
        with profile("load fine-tuned"):
            source = source_in_pool(family.modelpool, task)
            with reading(f"the model of task {task!r} ({source})"):
                finetuned = family.load_encoder(task)
            with reading(f"the head of task {task!r} (from {source})"):  # a zero-shot head is computed, not read
                material.heads[task] = family.load_head(task)
        check_test_set(family, task, material.heads[task])
        finetuned_params = dict(finetuned.named_parameters())
        check_finite(finetuned_params, f"the model of task {task!r} ({source})")
        check_finite(material.heads[task].state_dict(), f"the head of task {task!r} (from {source})")
        check_same_parameters(pretrained_params, finetuned_params, task, source)
        merger.set_task_vector(index, finetuned_params)
        material.head_encoders[task] = {
            n: finetuned_params[n].detach().float().to(device) for n in run.head_encoder_names
        }
        if lot is not None:
            with profile("LOT statistics"):
                observe_expert(
                    lot,
                    family,
                    task,
                    pretrained_params,
                    finetuned,
                    num_samples=LOT_START["num_samples"],
                    seed=options.seed,
                    batch_size=options.preprocess_batch_size,
                    num_workers=options.num_workers,
                    device=device,
                )
        if with_teachers:
            material.inputs[task], material.teachers[task] = teacher_pass(
                family, task, finetuned, material.heads[task], device
            )
        del finetuned  # the fine-tuned encoders never stay on the device
    if lot is not None:
        with profile("LOT solve"):
            merger.rebase(lot.task_vector())
    merger.check_complete()
    objectives = {task: family.task_objective(task) for task in run.tasks}
    check_loss_for_regression(
        options.loss, [t for t, head in material.heads.items() if family.is_regression(head) and objectives[t] is None]
    )
    run.states = task_states(run.tasks, material, merger, run.block_names, objectives)
