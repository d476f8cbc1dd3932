"""The result: one merged encoder plus one tinted layer per task, on FusionBench's ``ModulatedModel`` (as
EMR-Merging's): ``set_task(name)`` switches the task's part in, and ``task_head(name)`` gives its head."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import torch
from fusion_bench.models.modulator.base import ModulatedModel, TaskModulator
from torch import Tensor, nn

from .weights_io import TINTED_LAYERS_FILE, save_tensors


def _buffer_name(parameter_name: str) -> str:
    return parameter_name.replace(".", "__")


class TintModulator(TaskModulator):
    """A task's own part: its trained head and/or encoder tensors swapped in at ``set_task`` (its copy of a
    tinted transformer block, or encoder tensors that belong to its head, e.g. BERT's pooler)."""

    def __init__(self, head: Optional[nn.Module] = None, block: Optional[Mapping[str, Tensor]] = None):
        super().__init__()
        self.head = head
        self.block_names = list(block or {})
        for name, value in (block or {}).items():
            self.register_buffer(_buffer_name(name), value.detach().clone())
        self._saved: Dict[str, Tensor] = {}

    def block_state(self) -> Dict[str, Tensor]:
        return {name: getattr(self, _buffer_name(name)) for name in self.block_names}

    @torch.no_grad()
    def apply(self, modulated_model: "TintedModel") -> None:
        params = dict(modulated_model.backbone.named_parameters())
        for name, value in self.block_state().items():
            self._saved[name] = params[name].detach().clone()
            params[name].copy_(value.to(params[name].dtype))

    @torch.no_grad()
    def remove(self, modulated_model: "TintedModel") -> None:
        params = dict(modulated_model.backbone.named_parameters())
        for name, value in self._saved.items():
            params[name].copy_(value)
        self._saved.clear()
        modulated_model._current_task = None

    def tinted_state(self) -> Dict[str, Tensor]:
        """The tensors that make this task's own part (what gets saved): its head, and the encoder
        tensors it replaces (a tinted block, or the encoder tensors of its head such as BERT's pooler)."""
        head = {f"head.{k}": v for k, v in self.head.state_dict().items()} if self.head is not None else {}
        return {**head, **{f"block.{k}": v for k, v in self.block_state().items()}}


class TintedModel(ModulatedModel):
    """Merged encoder + per-task tinted layers. ``forward`` is the encoder's, for the current task."""

    def __init__(self, backbone: nn.Module, modulators: Mapping[str, TintModulator], report: Dict[str, Any]):
        super().__init__(backbone, dict(modulators))
        #: figures of the adaptation (also in the log folder's report file; task-aware task pools copy them into
        #: the evaluation report)
        self.report_extras = report

    def __getattr__(self, name: str):
        # Behave like the encoder for attributes task pools read from it (e.g. OpenCLIP's
        # `val_preprocess`, HF's `config`).
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("backbone", "modulators") or "backbone" not in self._modules:
                raise
            return getattr(self._modules["backbone"], name)

    @property
    def task_names(self):
        return list(self.modulators.keys())

    def task_head(self, task_name: str) -> Optional[nn.Module]:
        """The tinted head of ``task_name``; None when the tinted layer is an inner block (the task
        pool's own head is then the right one)."""
        return self.modulators[task_name].head

    def save_pretrained(self, path: str, **kwargs) -> None:
        """Save the merged encoder (``save_pretrained`` of the backbone when it has one, else the pickled
        module) and the tinted layers (``tinted_layers.safetensors``) in folder ``path``."""
        os.makedirs(path, exist_ok=True)
        current = self._current_task
        if current is not None:
            self.modulators[current].remove(self)  # save the shared merged weights, not a task's block
        try:
            if hasattr(self.backbone, "save_pretrained"):
                self.backbone.save_pretrained(path, **kwargs)
            else:
                torch.save(self.backbone, os.path.join(path, "image_encoder.pt"))
        finally:
            if current is not None:
                self.set_task(current)
        tensors = {
            f"{task}.{name}": value
            for task, modulator in self.modulators.items()
            for name, value in modulator.tinted_state().items()
        }
        save_tensors(os.path.join(path, TINTED_LAYERS_FILE), tensors, {"tasks": ",".join(self.task_names)})
