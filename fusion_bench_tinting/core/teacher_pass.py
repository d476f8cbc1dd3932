"""Each task's unlabelled test inputs, preprocessed once, and its teacher's outputs on them.

The teacher of a task is its fine-tuned model; its outputs are the targets of the adaptation. Both are
cached under FusionBench's cache folder, keyed by the configs and files they come from, so a second run on
the same suite decodes no image and runs no teacher. Under data parallelism only each node's first process
computes an entry; the others wait at a barrier and read it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .caching import TaskCache, library_versions
from .console import progress
from .data import AdaptationInputs, resolve_num_workers
from .families import ModelFamily
from .finite import check_finite
from .input_checks import reading, source_in_pool
from .memory import explain_out_of_memory

log = logging.getLogger(__name__)

TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: uint8 keeps images on their 8-bit grid (normalised on the device; text inputs are token ids anyway)
INPUT_DTYPES = {**TENSOR_DTYPES, "uint8": torch.uint8}

Entry = Dict[str, Any]


def fusion_bench_cache_dir() -> str:
    """FusionBench's cache folder: $FUSION_BENCH_CACHE_DIR, else the run's ``path.cache_dir``."""
    from fusion_bench.constants import RuntimeConstants

    return os.environ.get("FUSION_BENCH_CACHE_DIR") or str(RuntimeConstants().cache_dir)


@dataclass
class TeacherPass:
    """The method's options that shape the inputs and the teacher pass, and the Fabric it runs under."""

    fabric: Any
    input_dtype: str = "uint8"
    batch_size: int = 128
    num_workers: int = 0
    reuse_cache: bool = True
    inputs_on_device: Union[bool, str] = "auto"
    profile: Callable[[str], ContextManager] = lambda name: contextlib.nullcontext()

    def __call__(
        self, family: ModelFamily, task: str, finetuned: nn.Module, head: nn.Module, device: torch.device
    ) -> Tuple[AdaptationInputs, Tensor]:
        """The task's inputs (placed per ``inputs_on_device``) and the teacher's outputs on ``device``; from the
        cache when the files and configs they come from are unchanged."""
        compute = lambda: self._preprocess_and_teach(family, task, finetuned, head, device)  # noqa: E731
        cache = TaskCache(Path(fusion_bench_cache_dir()) / "model_tinting")
        key = cache.key(
            {**family.cache_identity(task), "input_dtype": self.input_dtype, "versions": library_versions()}
        )
        size = family.adaptation_size(task)
        entry = self._cached_entry(cache, key, size) if self.reuse_cache else None
        if entry is not None:
            log.info("Task %s: preprocessed inputs and teacher outputs from the cache (%s).", task, key)
        else:  # without reuse_cache, a fresh entry overwrites the old one
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

    def _preprocess_and_teach(self, family: ModelFamily, task: str, finetuned: nn.Module, head: nn.Module, device):
        """Preprocess the task's test inputs once, check they fit the model, and run the teacher over them."""
        split = family.adaptation_split
        source = source_in_pool(family.modelpool, task, split)
        with self.profile("preprocess inputs"), reading(f"the {split} set of task {task!r} ({source})"):
            inputs = family.adaptation_inputs(
                task,
                batch_size=self.batch_size,
                num_workers=self._workers(family.adaptation_size(task)),
                dtype=INPUT_DTYPES[self.input_dtype],
            )
        family.check_inputs(task, inputs, finetuned)
        with (
            self.profile("teacher outputs"),
            explain_out_of_memory(
                f"The teacher pass of {task!r} (batches of {self.batch_size})",
                "Lower method.preprocess_batch_size or store the task vectors in method.task_vector_dtype=bfloat16.",
            ),
        ):
            teacher = self._teacher_outputs(family, finetuned.to(device), head, inputs, device)
        check_finite({"teacher outputs": teacher}, f"the teacher (fine-tuned model) of task {task!r} on its inputs")
        return inputs, teacher

    def _workers(self, num_samples: int) -> int:
        """``num_workers`` for this pass: only each node's first process preprocesses (see :meth:`_fill_cache`)."""
        return resolve_num_workers(self.num_workers, num_samples, 1)

    @torch.no_grad()
    def _teacher_outputs(
        self, family: ModelFamily, encoder: nn.Module, head: nn.Module, inputs: AdaptationInputs, device
    ) -> Tensor:
        outputs = []
        batches = inputs.batches(self.batch_size, device, torch.float32)
        total = -(-len(inputs) // self.batch_size)
        for batch in progress(batches, total=total, desc="Teacher outputs", nested=True):
            with self.fabric.autocast():
                outputs.append(head(family.encode(encoder, batch)).float())
        return torch.cat(outputs)

    def _place(self, inputs: AdaptationInputs, device: torch.device) -> AdaptationInputs:
        """On the device when asked, or (``auto``) on the CPU's own device or when they fill under a quarter of
        the GPU's free memory; otherwise on the host, gathered batch by batch."""
        on_device = self.inputs_on_device
        if on_device == "auto":
            on_device = device.type == "cpu" or (
                device.type == "cuda" and inputs.nbytes < torch.cuda.mem_get_info(device)[0] // 4
            )
        return inputs.to(device) if on_device else inputs.to(torch.device("cpu"))
