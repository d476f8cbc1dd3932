"""The state of one tinting run, handed from step to step of the method, and each task's trainable state.

:class:`TintingRun` replaces the long argument lists between the method's steps: what ``auto`` resolved to,
the merger, the tasks' states and, after adaptation, its statistics. :func:`task_states` gives each task its
own copy of what is tinted: its head (the teacher keeps the original) or one transformer block.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from .adaptation import AdaptationStats, TaskState
from .data import AdaptationInputs, TensorInputs
from .errors import TintingConfigError
from .families import ModelFamily
from .merging import LayerWiseMerger


@dataclass
class TintingRun:
    family: ModelFamily
    tasks: List[str]
    device: torch.device
    lr: float
    max_steps: int
    init_value: float
    pretrained: Optional[nn.Module] = None
    merger: Optional[LayerWiseMerger] = None
    #: encoder tensors of the tinted block (empty when the head is tinted)
    block_names: List[str] = field(default_factory=list)
    #: encoder tensors that belong to each task's head, out of the merge (BERT's pooler)
    head_encoder_names: List[str] = field(default_factory=list)
    states: List[TaskState] = field(default_factory=list)
    stats: Optional[AdaptationStats] = None
    #: the folder of this run's checkpoints (None without a log folder), named when a run fails late
    checkpoints: Optional[Any] = None


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
