"""What one run works on, each made once by one step of the method: :class:`RunPlan` (tasks, resolved ``auto``
values), :class:`MergeBase` (pretrained encoder and merger), each task's :class:`TaskState` (its own copy of what
is tinted: its head, the teacher keeping the original, or one transformer block) and :class:`TintingRun`."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from .data import AdaptationInputs, TensorInputs
from .errors import TintingConfigError
from .families import ModelFamily
from .merging import LayerWiseMerger


@dataclass
class TaskState:
    """One task during adaptation."""

    name: str
    inputs: AdaptationInputs
    teacher: Tensor  # (num_samples, num_outputs), fp32, on the device
    head: nn.Module  # maps features to logits; trainable when the head is the tinted layer
    block: Dict[str, nn.Parameter] = field(default_factory=dict)  # the task's own copy of a block
    #: encoder tensors that belong to the task's head, not to the merge (BERT's pooler): the task's own
    #: fine-tuned values, trained with the head when the head is the tinted layer
    head_encoder: Dict[str, nn.Parameter] = field(default_factory=dict)
    #: the loss this task's outputs need whatever ``loss`` says (e.g. ``l1`` for a depth map), set by its family
    objective: Optional[str] = None

    @property
    def is_regression(self) -> bool:
        """Outputs that are not class scores (one value, or a fixed objective): no confidence filter."""
        return self.objective is not None or self.teacher.shape[1] == 1

    @property
    def outputs_per_sample(self) -> int:
        """Positions the loss is taken at in one sample: 1, or the pixels of a dense prediction
        (teacher outputs of shape (samples, channels, *positions))."""
        return int(math.prod(self.teacher.shape[2:]))

    def tinted_parameters(self) -> List[nn.Parameter]:
        if self.block:
            return list(self.block.values())
        return list(self.head_encoder.values()) + list(self.head.parameters())

    def own_tensors(self) -> Dict[str, nn.Parameter]:
        """Encoder tensors that replace merged ones in this task's forward."""
        return {**self.head_encoder, **self.block}


@dataclass
class AdaptationStats:
    optimizer_steps: int
    skipped_steps: int
    seconds: float
    #: samples (positions, for a dense prediction) each task's steps saw, and those the ++ filter dropped
    samples_seen: Dict[str, int]
    samples_dropped: Dict[str, int]
    final_loss: Dict[str, float]
    #: the first iteration of this run, compilation included (``compile_step``)
    first_iteration_seconds: float = 0.0
    #: more of the adaptation's account from a loop that extends the core's (the report shows them as given)
    extras: Dict[str, Any] = field(default_factory=dict)

    def dropped_fraction(self) -> Dict[str, float]:
        return {task: (self.samples_dropped[task] / seen if seen else 0.0) for task, seen in self.samples_seen.items()}


@dataclass(frozen=True)
class RunPlan:
    """The pool's tasks and what the ``auto`` options stand for in this run."""

    family: ModelFamily
    tasks: List[str]
    device: torch.device
    lr: float
    max_steps: int
    init_value: float


@dataclass(frozen=True)
class MergeBase:
    """The pretrained encoder and the layer-wise merger over its merged tensors."""

    pretrained: nn.Module
    merger: LayerWiseMerger
    #: encoder tensors of the tinted block (empty when the head is tinted)
    block_names: List[str]
    #: encoder tensors that belong to each task's head, out of the merge (BERT's pooler)
    head_encoder_names: List[str]


@dataclass(frozen=True)
class TintingRun:
    """A plan, its merge base and every task's state: what adaptation and the result read."""

    plan: RunPlan
    base: MergeBase
    states: List[TaskState]
    #: where the coefficients started (a :class:`.preparation.MergeStart`)
    start: Any = None

    # the fields read most, by their own names
    family = property(lambda self: self.plan.family)
    tasks = property(lambda self: self.plan.tasks)
    device = property(lambda self: self.plan.device)
    max_steps = property(lambda self: self.plan.max_steps)
    pretrained = property(lambda self: self.base.pretrained)
    merger = property(lambda self: self.base.merger)


@dataclass
class TaskMaterial:
    """What each fine-tuned model leaves behind once its task vector is stored."""

    heads: Dict[str, nn.Module] = field(default_factory=dict)
    head_encoders: Dict[str, Dict[str, Tensor]] = field(default_factory=dict)
    inputs: Dict[str, AdaptationInputs] = field(default_factory=dict)
    teachers: Dict[str, Tensor] = field(default_factory=dict)


def block_parameter_names(family: ModelFamily, encoder: nn.Module, tinted_layer: Union[str, int]) -> List[str]:
    """The encoder tensors of transformer block ``tinted_layer``; none for ``head``."""
    if tinted_layer == "head":
        return []
    index = int(tinted_layer)
    prefixes = family.block_prefixes(encoder)
    if index >= len(prefixes):
        raise TintingConfigError(
            f"tinted_layer={index} is out of range: the encoder has {len(prefixes)} transformer blocks "
            f"(indices 0..{len(prefixes) - 1})."
        )
    return [n for n, _ in encoder.named_parameters() if n.startswith(prefixes[index])]


def task_states(
    tasks: List[str],
    material: TaskMaterial,
    merger: LayerWiseMerger,
    block_names: List[str],
    objectives: Optional[Dict[str, Optional[str]]] = None,
) -> List[TaskState]:
    """Each task's trainable state: a copy of its head, or its own copy of the tinted block taken from the
    initial merge."""
    initial = None
    if block_names:
        with torch.no_grad():
            merged = merger()
            initial = {n: merged[n].detach().clone() for n in block_names}
    states = []
    for task in tasks:
        if block_names:
            head = material.heads[task]
            block = {n: nn.Parameter(v.clone()) for n, v in initial.items()}
        else:
            head = copy.deepcopy(material.heads[task])
            block = {}
        states.append(
            TaskState(
                name=task,
                inputs=material.inputs.get(task, TensorInputs(torch.empty(0))),
                teacher=material.teachers.get(task, torch.empty(0, 1)),
                head=head,
                block=block,
                head_encoder={n: nn.Parameter(v.clone()) for n, v in material.head_encoders[task].items()},
                objective=(objectives or {}).get(task),
            )
        )
    return states
