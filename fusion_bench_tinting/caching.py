"""A disk cache of each task's preprocessed inputs and teacher outputs.

The key describes everything those depend on: the configs of the task's fine-tuned model, of the
pretrained model (zero-shot heads, preprocessing), of the test dataset, of the tokenizer or processor,
the input dtype and library versions, plus the size and modification time of every local file those
configs name. A changed model file, dataset or preprocessing gives a new key, so the stale entry is
never used (it is rebuilt under the new key). Hub ids are keyed by name only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)


def _local_files(value: str) -> Optional[list]:
    path = Path(os.path.expanduser(value))
    if not value or len(value) > 4096 or not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def describe_source(config: Any) -> Any:
    """A JSON-able description of a config, with the stats of every local file or folder it names."""
    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return {str(k): describe_source(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [describe_source(v) for v in config]
    if isinstance(config, str):
        files = _local_files(config)
        return config if files is None else {"path": config, "files": files}
    if config is None or isinstance(config, (int, float, bool)):
        return config
    return repr(config)


def library_versions() -> Dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "fusion-bench", "fusion-bench-tinting", "open_clip_torch", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


class TaskCache:
    """Entries ``<key>.safetensors``: a task's preprocessed inputs and its teacher's outputs, as plain tensors
    (nothing is unpickled from a cache folder that other users or jobs may share), written atomically."""

    def __init__(self, folder: os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(identity: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str) -> Optional[Dict[str, Any]]:
        """``{"inputs": ..., "teacher": ...}``, or None when there is no readable entry."""
        from safetensors import safe_open

        from .data import inputs_kinds

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as entry:
                kind = inputs_kinds()[entry.metadata()["inputs_kind"]]
                tensors = {name: entry.get_tensor(name) for name in entry.keys()}
        except Exception as error:
            log.warning("Cache entry %s cannot be read (%s): rebuilding it.", path, error)
            return None
        inputs = {name[len("inputs."):]: t for name, t in tensors.items() if name.startswith("inputs.")}
        return {"inputs": kind.from_tensors(inputs), "teacher": tensors["teacher"]}

    def save(self, key: str, inputs: Any, teacher: torch.Tensor) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tensors = {"teacher": teacher, **{f"inputs.{name}": t for name, t in inputs.tensors().items()}}
        # one temporary name per process: the first process of every node may write the same entry
        temporary = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
        save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(temporary),
                  metadata={"inputs_kind": inputs.KIND})
        os.replace(temporary, path)
