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
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from .atomic import remove_stale_temporaries, write_atomically

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


def checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """BLAKE2b of every tensor's name, dtype, shape and bytes, in name order: any altered byte changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy
    return digest.hexdigest()


class TaskCache:
    """Entries ``<key>.safetensors``: a task's preprocessed inputs and its teacher's outputs, as plain tensors
    (nothing is unpickled from a cache folder that other users or jobs may share), written atomically.

    Each entry carries what it must match: its key, its number of inputs, the teacher's shape and a checksum
    of its tensors. An entry that parses but fails one of them (altered bytes, another task's entry under
    this key, a teacher of other rows) is reported in one line and treated as absent, so it is rebuilt."""

    def __init__(self, folder: os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(identity: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str, num_inputs: Optional[int] = None) -> Optional[Dict[str, Any]]:
        """``{"inputs": ..., "teacher": ...}``, or None when there is no entry that reads and checks out
        (``num_inputs``: how many inputs the task has now, when known)."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as entry:
                metadata = entry.metadata() or {}
                tensors = {name: entry.get_tensor(name) for name in entry.keys()}
            problem = _entry_problem(key, metadata, tensors, num_inputs)
        except Exception as error:
            problem = f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        if problem:
            log.warning("Cache entry %s is not valid: %s; rebuilding it.", path, problem)
            return None
        from .data import inputs_kinds

        inputs = {name[len("inputs.") :]: t for name, t in tensors.items() if name.startswith("inputs.")}
        return {"inputs": inputs_kinds()[metadata["inputs_kind"]].from_tensors(inputs), "teacher": tensors["teacher"]}

    def save(self, key: str, inputs: Any, teacher: torch.Tensor) -> None:
        """Write the entry atomically; a write that fails (a full or read-only folder) is a warning, not an
        error: the run goes on with what it computed."""
        from safetensors.torch import save_file

        tensors = {"teacher": teacher, **{f"inputs.{name}": t for name, t in inputs.tensors().items()}}
        tensors = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
        metadata = {
            "inputs_kind": inputs.KIND,
            "key": key,
            "num_inputs": str(len(inputs)),
            "teacher_shape": json.dumps(list(teacher.shape)),
            "checksum": checksum(tensors),
        }
        path = self.path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder)
            write_atomically(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))
        except Exception as error:  # OSError, or safetensors' own error for a full disk
            log.warning(
                "Cache entry %s could not be written (%s: %s); the run goes on without it.",
                path,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )


def _entry_problem(
    key: str, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor], num_inputs: Optional[int]
) -> str:
    """What is wrong with a parsed cache entry, or '' when it is the entry of ``key`` as it was written."""
    from .data import inputs_kinds
    from .finite import first_non_finite

    if metadata.get("key") != key:
        key = metadata.get("key")
        return f"it was written under key {key!r}, not this one (an entry of another task or an older format)"
    if metadata.get("inputs_kind") not in inputs_kinds() or "teacher" not in tensors:
        return "it lacks its inputs kind or teacher outputs"
    if checksum(tensors) != metadata.get("checksum"):
        return "its tensors do not match their checksum (altered or damaged bytes)"
    teacher, stored = tensors["teacher"], int(metadata.get("num_inputs", -1))
    if list(teacher.shape) != json.loads(metadata.get("teacher_shape", "[]")) or teacher.shape[0] != stored:
        return f"its teacher outputs have shape {tuple(teacher.shape)} for {stored} inputs"
    if num_inputs is not None and stored != num_inputs:
        return f"it holds {stored} inputs, the task has {num_inputs}"
    if first_non_finite({"teacher": teacher}):
        return "its teacher outputs hold NaN or infinite values"
    return ""
