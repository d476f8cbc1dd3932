"""Saving a tinting result, whole or not at all: ``model_tinting.safetensors`` holds ``coefficients`` (tasks x
tensors, before the clamp) and ``tinted.<task>.<name>`` for each task's tinted layer; its metadata (task order,
coefficient groups, tinted layer) lets a reader refuse a file made for another pool or configuration."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from typing import Callable, List, Mapping, Optional

from safetensors.torch import save_file
from torch import Tensor

WEIGHTS_FILE = "model_tinting.safetensors"
TINTED_LAYERS_FILE = "tinted_layers.safetensors"
FORMAT = "fusion_bench_tinting/1"


def temporary_name(path: str) -> str:
    """A name beside ``path`` that no other process writes (hosts may share a folder)."""
    return f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary)``, then fsync and rename it to ``path``: a kill or a full disk leaves the old file or
    the new one, never half of one (on failure the temporary is removed and ``path`` left as it was)."""
    temporary = temporary_name(str(path))
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_tensors(path: str, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write tensors atomically (temporary file + rename), contiguous and on the CPU."""
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_atomically(path, lambda temporary: save_file(plain, temporary, metadata=dict(metadata)))


def groups_fingerprint(groups: List[str]) -> str:
    return hashlib.sha256("\n".join(groups).encode()).hexdigest()[:16]


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
