"""Saving and loading a tinting result: merging coefficients and tinted layers (safetensors).

One file, ``model_tinting.safetensors``: tensor ``coefficients`` (tasks x coefficient groups, raw
values before the clamp) and ``tinted.<task>.<name>`` for every tensor of each task's tinted layer.
Its metadata records the task order, the coefficient groups and the tinted-layer choice, so that a
file made for another pool or another configuration is refused with a message saying what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .atomic import write_atomically
from .errors import TintingConfigError
from .finite import check_finite

WEIGHTS_FILE = "model_tinting.safetensors"
TINTED_LAYERS_FILE = "tinted_layers.safetensors"
FORMAT = "fusion_bench_tinting/1"


def save_tensors(path: str, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write tensors atomically (temporary file + rename), contiguous and on the CPU."""
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_atomically(path, lambda temporary: save_file(plain, temporary, metadata=dict(metadata)))


def groups_fingerprint(groups: List[str]) -> str:
    return hashlib.sha256("\n".join(groups).encode()).hexdigest()[:16]


@dataclass
class SavedTinting:
    task_names: List[str]
    groups_fingerprint: str
    num_groups: int
    tinted_layer: str
    coefficients: Tensor
    tinted: Dict[str, Dict[str, Tensor]]
    path: str
    origin: str = "task_arithmetic"


def save_tinting(
    path: str,
    *,
    task_names: List[str],
    coefficient_groups: List[str],
    coefficients: Tensor,
    tinted: Mapping[str, Mapping[str, Tensor]],
    tinted_layer: str,
    extra_metadata: Optional[Mapping[str, str]] = None,
) -> None:
    tensors = {"coefficients": coefficients}
    for task, state in tinted.items():
        for name, value in state.items():
            tensors[f"tinted.{task}.{name}"] = value
    metadata = {
        "format": FORMAT,
        "tasks": json.dumps(task_names),
        "coefficient_groups_sha256": groups_fingerprint(coefficient_groups),
        "num_coefficient_groups": str(len(coefficient_groups)),
        "coefficient_groups": json.dumps(coefficient_groups),
        "tinted_layer": tinted_layer,
        **(extra_metadata or {}),
    }
    save_tensors(path, tensors, metadata)


def resolve_weights_path(path: str) -> str:
    """Accept the file itself or the log folder of a run that saved it."""
    if os.path.isdir(path):
        path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise TintingConfigError(f"weights={path!r}: no such file (expected a {WEIGHTS_FILE} or a folder holding one)")
    return path


def load_tinting(path: str) -> SavedTinting:
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
            f"configuration have {len(coefficient_groups)} (another architecture, or another tie_qkv setting)"
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
