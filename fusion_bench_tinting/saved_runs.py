"""The plugin's option ``weights``: load the coefficients and tinted layers a run saved
(``<log dir>/model_tinting.safetensors``, the core's :mod:`.core.weights_io`) instead of adapting again, e.g. to
score them on other task pools. A file made for another pool or configuration is refused, saying what differs."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
from safetensors import safe_open
from torch import Tensor

from .core.errors import TintingConfigError, check_finite
from .core.merging import LayerWiseMerger
from .core.options import Option, is_path, or_none
from .core.results import HEAD_ENCODER_PREFIX, saved_task_tensors
from .core.run_state import AdaptationStats, TaskState, TintingRun
from .core.weights_io import FORMAT, WEIGHTS_FILE, groups_fingerprint

log = logging.getLogger(__name__)

WEIGHTS_OPTION = Option(
    "weights",
    None,
    or_none(is_path),
    "null or the path of a saved run",
    "a model_tinting.safetensors (or the log folder holding one): load it and skip adaptation",
    changes_result=False,
    section="The plugin's saved runs",
)


@dataclass
class SavedTinting:
    """A saved run as read back: its metadata (what it must match) and its tensors, by task."""

    task_names: List[str]
    groups_fingerprint: str
    num_groups: int
    tinted_layer: str
    coefficients: Tensor
    tinted: Dict[str, Dict[str, Tensor]]
    path: str
    origin: str = "task_arithmetic"


def resolve_weights_path(path: str) -> str:
    """Accept the file itself or the log folder of a run that saved it."""
    if os.path.isdir(path):
        path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise TintingConfigError(f"weights={path!r}: no such file (expected a {WEIGHTS_FILE} or a folder holding one)")
    return path


def load_tinting(path: str) -> SavedTinting:
    """Read and check a saved run: a safetensors file of this format, every tensor finite and of a saved task."""
    path = resolve_weights_path(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise TintingConfigError(f"weights={path!r} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT or "coefficients" not in tensors:
        raise TintingConfigError(f"weights={path!r} was not written by fusion-bench-tinting ({FORMAT})")
    check_finite(tensors, f"weights={path!r}")
    task_names = json.loads(metadata["tasks"])
    tinted: Dict[str, Dict[str, Tensor]] = {task: {} for task in task_names}
    for key, value in tensors.items():
        if key.startswith("tinted."):
            task_and_name = key[len("tinted.") :]
            task = next((t for t in task_names if task_and_name.startswith(t + ".")), None)
            if task is None:
                raise TintingConfigError(f"weights={path!r}: tensor {key!r} belongs to no saved task")
            tinted[task][task_and_name[len(task) + 1 :]] = value
    return SavedTinting(
        task_names=task_names,
        groups_fingerprint=metadata["coefficient_groups_sha256"],
        num_groups=int(metadata["num_coefficient_groups"]),
        tinted_layer=metadata["tinted_layer"],
        coefficients=tensors["coefficients"],
        tinted=tinted,
        path=path,
        origin=metadata.get("origin", "task_arithmetic"),
    )


def check_matches(
    saved: SavedTinting,
    *,
    task_names: List[str],
    coefficient_groups: List[str],
    tinted_layer: str,
    tinted_shapes: Mapping[str, Mapping[str, torch.Size]],
    origin: str = "task_arithmetic",
) -> None:
    """Refuse saved weights that were made for another pool or configuration, saying what differs."""
    problems = []
    if sorted(saved.task_names) != sorted(task_names):
        problems.append(f"tasks differ: saved {saved.task_names}, model pool {task_names}")
    if saved.num_groups != len(coefficient_groups) or saved.groups_fingerprint != groups_fingerprint(
        coefficient_groups
    ):
        problems.append(
            f"merging coefficients differ: saved {saved.num_groups} coefficient groups, this pool and "
            f"configuration have {len(coefficient_groups)} (another architecture)"
        )
    if saved.tinted_layer != tinted_layer:
        problems.append(f"tinted layer differs: saved {saved.tinted_layer!r}, configured {tinted_layer!r}")
    if saved.origin != origin:
        problems.append(
            f"the coefficients start from another merge: saved {saved.origin!r}, configured {origin!r} (init_from)"
        )
    if not problems:
        for task, shapes in tinted_shapes.items():
            saved_shapes = {k: v.shape for k, v in saved.tinted[task].items()}
            if saved_shapes != dict(shapes):
                problems.append(f"tinted layer of task {task!r} has other tensors or shapes than this pool's")
    if problems:
        raise TintingConfigError(f"weights={saved.path!r} do not match this model pool: " + "; ".join(problems) + ".")


@torch.no_grad()
def load_saved(saved: SavedTinting, merger: LayerWiseMerger, states: List[TaskState]) -> None:
    """Coefficients and tinted layers of a saved run into this run's merger and task states (its task order)."""
    row = {task: i for i, task in enumerate(saved.task_names)}
    merger.coefficients.copy_(saved.coefficients[[row[s.name] for s in states]].to(merger.coefficients))
    for state in states:
        tensors = dict(saved.tinted[state.name])
        for name, param in state.head_encoder.items():
            param.copy_(tensors.pop(HEAD_ENCODER_PREFIX + name).to(param))
        if state.block:
            for name, param in state.block.items():
                param.copy_(tensors[name].to(param))
        else:
            device = next(state.head.parameters()).device
            state.head.load_state_dict({k: v.to(device) for k, v in tensors.items()})
    log.info("Loaded merging coefficients and tinted layers from %s; adaptation skipped.", saved.path)


class SavedRunMixin:
    """Model Tinting that, given ``weights``, loads a saved result instead of adapting (no teacher pass)."""

    @property
    def _adapts(self) -> bool:
        return self.weights is None

    def _adapt(self, run: TintingRun) -> Optional[AdaptationStats]:
        if self.weights is None:
            return super()._adapt(run)
        saved = load_tinting(self.weights)
        check_matches(
            saved,
            task_names=run.tasks,
            coefficient_groups=run.merger.group_names,
            tinted_layer=str(self.tinted_layer),
            tinted_shapes={s.name: {k: v.shape for k, v in saved_task_tensors(s).items()} for s in run.states},
            origin=run.start.origin,
        )
        load_saved(saved, run.merger, run.states)
        return None

    def _result(self, run: TintingRun, stats: Optional[AdaptationStats]) -> Any:
        model = super()._result(run, stats)
        if stats is None:
            model.report_extras["weights_loaded_from"] = os.path.abspath(resolve_weights_path(self.weights))
        return model
