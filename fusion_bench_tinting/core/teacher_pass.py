"""Each task's adaptation inputs, preprocessed once, and its teacher's (fine-tuned model's) outputs on them:
computed before the loop, so that no fine-tuned encoder stays on the device during adaptation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Tuple, Union

import torch
from torch import Tensor, nn

from .console import progress
from .data import AdaptationInputs, resolve_num_workers
from .errors import check_finite, explain_out_of_memory
from .families import ModelFamily
from .input_checks import reading, source_in_pool

TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: uint8 keeps images on their 8-bit grid (normalised on the device; text inputs are token ids anyway)
INPUT_DTYPES = {**TENSOR_DTYPES, "uint8": torch.uint8}


@dataclass
class TeacherPass:
    """The method's options that shape the inputs and the teacher pass, and the Fabric it runs under."""

    fabric: Any
    input_dtype: str = "uint8"
    batch_size: int = 128
    num_workers: int = 0
    inputs_on_device: Union[bool, str] = "auto"
    profile: Callable[[str], ContextManager] = lambda name: contextlib.nullcontext()

    def __call__(
        self, family: ModelFamily, task: str, finetuned: nn.Module, head: nn.Module, device: torch.device
    ) -> Tuple[AdaptationInputs, Tensor]:
        """The task's inputs (placed per ``inputs_on_device``) and the teacher's outputs on ``device``."""
        inputs, teacher = self.compute(family, task, finetuned, head, device)
        return self._place(inputs, device), teacher.to(device)

    def compute(self, family: ModelFamily, task: str, finetuned: nn.Module, head: nn.Module, device):
        """Preprocess the task's test inputs once, check they fit the model, and run the teacher over them."""
        split = family.adaptation_split
        source = source_in_pool(family.modelpool, task, split)
        with self.profile("preprocess inputs"), reading(f"the {split} set of task {task!r} ({source})"):
            inputs = family.adaptation_inputs(
                task,
                batch_size=self.batch_size,
                num_workers=resolve_num_workers(self.num_workers, family.adaptation_size(task)),
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
