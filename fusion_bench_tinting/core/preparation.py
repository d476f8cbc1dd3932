"""Everything a run needs before its first step: the merger over the pretrained encoder, and from each
fine-tuned model its task vector, head, inputs and teacher outputs. Each fine-tuned model is loaded once and let
go after its turn; a :class:`MergeStart` sees each on the way (the plugin's LOT and AdaMerging starts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Optional, Tuple, Union

import torch

from .console import progress
from .errors import check_finite, check_fits, merge_bytes
from .families import PRETRAINED
from .input_checks import check_test_set, reading, source_in_pool
from .losses import check_loss_for_regression
from .merging import LayerWiseMerger, check_same_parameters
from .run_state import MergeBase, RunPlan, TaskMaterial, TaskState, block_parameter_names, task_states
from .teacher_pass import TENSOR_DTYPES, TeacherPass

Profile = Callable[[str], ContextManager]


class MergeStart:
    """Where the merging coefficients start: Task Arithmetic's merge, every coefficient ``init_values`` (the
    paper). A front end may start from another merge by overriding the three calls of the preparation."""

    #: what the coefficients are relative to (saved with the weights, checked when loading them)
    origin = "task_arithmetic"
    #: the coefficient that ``init_values=auto`` stands for; None: 0.3 up to 8 tasks, 0.1 above (the reference)
    auto_init_value: Optional[float] = None

    def description(self) -> str:
        """Where the coefficients started, for the report."""
        return self.origin

    def begin(self, base: MergeBase, plan: RunPlan) -> None:
        """The merger is built (every coefficient ``init_values``); no fine-tuned model is loaded yet."""

    def observe(self, task: str, finetuned: torch.nn.Module) -> None:
        """Task ``task``'s fine-tuned encoder, its task vector stored, before it is let go."""

    def finish(self, merger: LayerWiseMerger) -> None:
        """Every task vector is stored."""


@dataclass
class Preparation:
    """The method options that shape the merger and the per-task material (see the method's YAML)."""

    tinted_layer: Union[str, int]
    clamp_weights: bool
    clamp_range: Tuple[float, float]
    task_vector_dtype: str
    start: MergeStart
    loss: str
    input_dtype: str
    preprocess_batch_size: int
    num_workers: Union[int, str]
    inputs_on_device: Union[bool, str]
    #: what computes each task's inputs and teacher outputs (a front end may cache them: the plugin does)
    teacher_pass: Callable[..., TeacherPass]


def build_merger(plan: RunPlan, options: Preparation, profile: Profile) -> MergeBase:
    """The pretrained encoder and the layer-wise merger over its merged tensors (no task vector yet)."""
    family = plan.family
    source = source_in_pool(family.modelpool, PRETRAINED)
    with profile("load pretrained"):
        with reading(f"the pretrained model ({source})"):
            pretrained = family.load_encoder(PRETRAINED)
        check_finite(dict(pretrained.named_parameters()), f"the pretrained model ({source})")
    block_names = block_parameter_names(family, pretrained, options.tinted_layer)
    head_encoder_names = family.head_encoder_parameter_names(pretrained)
    own = set(head_encoder_names)
    merged_names = [n for n in family.merged_parameter_names(pretrained) if n not in own]
    params = dict(pretrained.named_parameters())
    dtype = TENSOR_DTYPES[options.task_vector_dtype]
    check_fits(
        plan.device,
        merge_bytes(sum(params[n].numel() for n in merged_names), len(plan.tasks), dtype),
        f"Merging {len(plan.tasks)} task vectors of {len(merged_names)} tensors",
        "Store the task vectors in half precision (method.task_vector_dtype=bfloat16), merge fewer tasks, "
        "or run on a device with more memory.",
    )
    merger = LayerWiseMerger(
        {n: params[n] for n in merged_names},
        len(plan.tasks),
        init_value=plan.init_value,
        clamp=options.clamp_weights,
        clamp_range=options.clamp_range,
        task_vector_dtype=dtype,
    ).to(plan.device)
    base = MergeBase(pretrained.to(plan.device), merger, block_names, head_encoder_names)
    options.start.begin(base, plan)
    return base


def load_tasks(
    plan: RunPlan, base: MergeBase, options: Preparation, fabric, profile: Profile, with_teachers: bool
) -> List[TaskState]:
    """Load each fine-tuned model once: keep its head (and the encoder tensors that belong to it), store its
    task vector in the merger, show it to the start and, unless adaptation is skipped,
    keep the task's preprocessed inputs and the teacher's outputs on them. Then let it go. Returns each
    task's trainable state."""
    family, merger = plan.family, base.merger
    pretrained_params = dict(base.pretrained.named_parameters())
    teacher_pass = options.teacher_pass(
        fabric=fabric,
        input_dtype=options.input_dtype,
        batch_size=options.preprocess_batch_size,
        num_workers=options.num_workers,
        inputs_on_device=options.inputs_on_device,
        profile=profile,
    )
    material = TaskMaterial()
    for index, task in enumerate(progress(plan.tasks, desc="Task vectors and teacher outputs")):
        finetuned = _load_task(family, task, material, profile)
        finetuned_params = dict(finetuned.named_parameters())
        check_same_parameters(pretrained_params, finetuned_params, task, source_in_pool(family.modelpool, task))
        merger.set_task_vector(index, finetuned_params)
        material.head_encoders[task] = {
            n: finetuned_params[n].detach().float().to(plan.device) for n in base.head_encoder_names
        }
        options.start.observe(task, finetuned)
        if with_teachers:
            material.inputs[task], material.teachers[task] = teacher_pass(
                family, task, finetuned, material.heads[task], plan.device
            )
        del finetuned  # the fine-tuned encoders never stay on the device
    options.start.finish(merger)
    merger.check_complete()
    objectives: Dict[str, Optional[str]] = {task: family.task_objective(task) for task in plan.tasks}
    check_loss_for_regression(
        options.loss, [t for t, head in material.heads.items() if family.is_regression(head) and objectives[t] is None]
    )
    return task_states(plan.tasks, material, merger, base.block_names, objectives)


def _load_task(family, task: str, material: TaskMaterial, profile: Profile) -> torch.nn.Module:
    """Task ``task``'s fine-tuned encoder; its head goes into ``material``. Both checked finite, the test
    set checked against the head."""
    source = source_in_pool(family.modelpool, task)
    with profile("load fine-tuned"):
        with reading(f"the model of task {task!r} ({source})"):
            finetuned = family.load_encoder(task)
        with reading(f"the head of task {task!r} (from {source})"):  # a zero-shot head is computed, not read
            material.heads[task] = family.load_head(task)
    check_test_set(family, task, material.heads[task])
    check_finite(dict(finetuned.named_parameters()), f"the model of task {task!r} ({source})")
    check_finite(material.heads[task].state_dict(), f"the head of task {task!r} (from {source})")
    return finetuned
