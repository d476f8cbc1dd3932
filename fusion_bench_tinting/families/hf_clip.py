"""Hugging Face CLIP vision towers (FusionBench's ``CLIPVisionModelPool``).

Encoder: ``CLIPVisionModel``. Features: its pooled output through the pretrained CLIP's frozen
``visual_projection``, L2-normalised (exactly what ``HFCLIPClassifier`` feeds its zero-shot head).
Head of task k: a ``Linear`` with weight ``logit_scale.exp() * T_k`` (T_k the zero-shot text
embeddings built by FusionBench from the task's class names and templates) and a zero bias, which
reproduces the zero-shot logits and is what the reference code trains.
"""

from __future__ import annotations

from typing import Any, List

import torch
from torch import Tensor, nn

from fusion_bench.dataset.image_dataset import ImageClassificationDataset
from fusion_bench.mixins import CLIPClassificationMixin
from fusion_bench.modelpool import CLIPVisionModelPool
from fusion_bench.tasks.clip_classification import CLIPTemplateFactory

from ..data import TensorInputs, cache_inputs
from ..errors import TintingConfigError
from .base import PRETRAINED, ModelFamily


class _ZeroShotHeads(CLIPClassificationMixin):
    """FusionBench's zero-shot head construction (cached with joblib), used outside an algorithm."""

    def __init__(self, modelpool: CLIPVisionModelPool, fabric):
        self.modelpool = modelpool
        self.fabric = fabric
        self.zeroshot_weights = {}  # the mixin's class-level dict would be shared between instances


class HFCLIPVisionFamily(ModelFamily):
    modelpool: CLIPVisionModelPool

    def __init__(self, modelpool: CLIPVisionModelPool, device: torch.device, fabric):
        super().__init__(modelpool, device)
        self._heads = _ZeroShotHeads(modelpool, fabric)
        self._heads_ready = False

    def validate_task(self, task: str) -> None:
        super().validate_task(task)
        known = CLIPTemplateFactory.get_available_datasets()
        if task not in known:
            raise TintingConfigError(
                f"Task {task!r} has no class names and templates in FusionBench's CLIP task registry "
                "(fusion_bench.tasks.clip_classification), so no zero-shot head can be built for it. "
                f"Known tasks: {sorted(known)}."
            )

    def load_encoder(self, name: str) -> nn.Module:
        encoder = self.modelpool.load_model(name)
        return encoder.eval().requires_grad_(False)

    def _setup_heads(self) -> None:
        if not self._heads_ready:
            self._heads.setup_zero_shot_classification_head(task_names=self.task_names())
            self._heads.visual_projection = self._heads.visual_projection.to(self.device).float()
            self._heads_ready = True

    def load_head(self, task: str) -> nn.Module:
        self._setup_heads()
        text_embeddings = self._heads.zeroshot_weights[task].float()
        head = nn.Linear(text_embeddings.shape[1], text_embeddings.shape[0], bias=True)
        with torch.no_grad():
            head.weight.copy_(self._heads.logit_scale_exp.float().cpu() * text_embeddings.cpu())
            head.bias.zero_()
        return head.to(self.device)

    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        self._setup_heads()
        pooled = encoder_output[1]
        embeddings = self._heads.visual_projection(pooled.to(self._heads.visual_projection.weight.dtype))
        return embeddings / embeddings.norm(p=2, dim=-1, keepdim=True)

    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        return [f"vision_model.encoder.layers.{i}." for i in range(len(encoder.vision_model.encoder.layers))]

    def adaptation_inputs(self, task: str, *, batch_size: int, num_workers: int, dtype: torch.dtype) -> TensorInputs:
        dataset = ImageClassificationDataset(self.modelpool.load_test_dataset(task), self._heads.clip_processor)
        return cache_inputs(
            dataset, batch_size=batch_size, num_workers=num_workers, dtype=dtype, desc=f"Preprocessing {task}"
        )


__all__ = ["HFCLIPVisionFamily", "PRETRAINED"]
