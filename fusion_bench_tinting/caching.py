"""A disk cache of each task's preprocessed inputs and teacher outputs, so that a second run on the same suite
decodes no image and runs no teacher (the plugin's; the core computes them in every run).

The key describes everything those depend on (:func:`.cache_identity.cache_identity`): the configs of the task's
fine-tuned model, of the pretrained model (zero-shot heads, preprocessing), of the adaptation dataset, of the
tokenizer or processor, the input dtype and library versions, plus the size and modification time of every
local file those configs name. A changed model file, dataset or preprocessing gives a new key, so the stale
entry is never used (it is rebuilt under the new key). Hub ids are keyed by name only. Entries live under
FusionBench's cache folder. Under data parallelism only each node's first process computes an entry; the others
wait at a barrier and read it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .cache_identity import cache_identity
from .core.data import AdaptationInputs, TensorInputs, Uint8ImageInputs
from .core.errors import first_non_finite
from .core.families import ModelFamily
from .core.results import library_versions
from .core.teacher_pass import TeacherPass
from .core.weights_io import write_atomically
from .families.token_inputs import TokenInputs
from .stale_files import remove_stale_temporaries

log = logging.getLogger(__name__)

#: the inputs classes a cache entry can hold, by their ``KIND``
INPUTS_KINDS = {cls.KIND: cls for cls in (TensorInputs, Uint8ImageInputs, TokenInputs)}

Entry = Dict[str, Any]


def fusion_bench_cache_dir() -> str:
    """FusionBench's cache folder: $FUSION_BENCH_CACHE_DIR, else the run's ``path.cache_dir``."""
    from fusion_bench.constants import RuntimeConstants

    return os.environ.get("FUSION_BENCH_CACHE_DIR") or str(RuntimeConstants().cache_dir)


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
        inputs = {name[len("inputs.") :]: t for name, t in tensors.items() if name.startswith("inputs.")}
        return {"inputs": INPUTS_KINDS[metadata["inputs_kind"]].from_tensors(inputs), "teacher": tensors["teacher"]}

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
    if metadata.get("key") != key:
        key = metadata.get("key")
        return f"it was written under key {key!r}, not this one (an entry of another task or an older format)"
    if metadata.get("inputs_kind") not in INPUTS_KINDS or "teacher" not in tensors:
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


@dataclass
class CachedTeacherPass(TeacherPass):
    """The core's teacher pass, each task's result kept in a :class:`TaskCache` (``reuse``: read a valid entry;
    False computes afresh and overwrites it)."""

    reuse: bool = True

    def __call__(
        self, family: ModelFamily, task: str, finetuned: nn.Module, head: nn.Module, device: torch.device
    ) -> Tuple[AdaptationInputs, Tensor]:
        """The task's inputs (placed per ``inputs_on_device``) and the teacher's outputs on ``device``; from the
        cache when the files and configs they come from are unchanged."""
        compute = lambda: self.compute(family, task, finetuned, head, device)  # noqa: E731
        cache = TaskCache(Path(fusion_bench_cache_dir()) / "model_tinting")
        key = cache.key(
            {**cache_identity(family, task), "input_dtype": self.input_dtype, "versions": library_versions()}
        )
        size = family.adaptation_size(task)
        entry = self._cached_entry(cache, key, size) if self.reuse else None
        if entry is not None:
            log.info("Task %s: preprocessed inputs and teacher outputs from the cache (%s).", task, key)
        else:  # without reuse, a fresh entry overwrites the old one
            entry = self._fill_cache(cache, key, compute, size)
        return self._place(entry["inputs"], device), entry["teacher"].to(device)

    def _cached_entry(self, cache: TaskCache, key: str, num_inputs: int) -> Optional[Entry]:
        """The cache entry if every process can read it (they must agree: the barriers of
        :meth:`_fill_cache` pair up only if all of them go there)."""
        entry = cache.load(key, num_inputs)
        if self.fabric.world_size > 1:
            found = torch.tensor(float(entry is not None), device=self.fabric.device)  # NCCL reduces GPU tensors only
            readable = self.fabric.all_reduce(found, reduce_op="min")
            if not bool(readable > 0):
                return None
        return entry

    def _fill_cache(
        self, cache: TaskCache, key: str, compute: Callable[[], Tuple[AdaptationInputs, Tensor]], num_inputs: int
    ) -> Entry:
        """Compute the entry and write it. Data parallel: only each node's first process computes; the
        others wait for it and read what it wrote, instead of decoding every image again on the same CPUs."""
        entry = None
        if self.fabric.local_rank == 0:
            inputs, teacher = compute()
            cache.save(key, inputs, teacher)
            entry = {"inputs": inputs, "teacher": teacher}  # the teacher stays where it was computed
        if self.fabric.world_size > 1:
            self.fabric.barrier()
        if entry is None:
            entry = cache.load(key, num_inputs)
            if entry is None:
                log.warning(
                    "Cache entry %s written by this node's first process cannot be read here: computing it again.", key
                )
                inputs, teacher = compute()
                entry = {"inputs": inputs, "teacher": teacher}
            else:
                log.info("Preprocessed inputs and teacher outputs read from this node's first process (%s).", key)
        return entry


class CachedTeacherPassMixin:
    """Model Tinting with the teacher pass cached (``reuse_cache``: a setting, not an option)."""

    #: reuse each task's cached inputs and teacher outputs while their checksums hold
    reuse_cache: bool = True

    @property
    def teacher_pass(self) -> Callable[..., TeacherPass]:
        return functools.partial(CachedTeacherPass, reuse=self.reuse_cache)
