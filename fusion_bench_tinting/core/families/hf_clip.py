"""Hugging Face CLIP vision towers (``CLIPVisionModelPool``). Features: the pooled output through the pretrained
CLIP's frozen ``visual_projection``, L2-normalised (as ``HFCLIPClassifier``). Head of task k: ``Linear`` with weight
``logit_scale.exp() * T_k`` (T_k: the zero-shot text embeddings of its classes and templates) and zero bias, which
reproduces the zero-shot logits and is what the reference code trains."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
from fusion_bench.modelpool import CLIPVisionModelPool
from fusion_bench.tasks.clip_classification import CLIPTemplateFactory, get_classnames_and_templates
from torch import Tensor, nn

from ..console import progress
from ..errors import TintingConfigError
from .base import PRETRAINED, ModelFamily, ProcessedImageInputs


@torch.no_grad()
def zero_shot_embeddings(
    clip_model, tokenizer, classnames: Sequence[str], templates: Sequence, batch_size: int = 512
) -> Tensor:
    """(classes, dim) zero-shot weights of one task: ``normalise(mean_t(normalise(text(template_t(class)))))``."""
    prompts = [template(name) for name in classnames for template in templates]
    device = clip_model.text_projection.weight.device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        inputs = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        pooled = clip_model.text_model(**{k: v.to(device) for k, v in inputs.items()})[1]
        chunks.append(clip_model.text_projection(pooled))
    embeddings = torch.cat(chunks)
    embeddings = embeddings / embeddings.norm(p=2, dim=-1, keepdim=True)
    embeddings = embeddings.view(len(classnames), len(templates), -1).mean(dim=1)
    return (embeddings / embeddings.norm(p=2, dim=-1, keepdim=True)).float()


class HFCLIPVisionFamily(ProcessedImageInputs, ModelFamily):
    modelpool: CLIPVisionModelPool

    def __init__(self, modelpool: CLIPVisionModelPool, device: torch.device, **options: Any):
        super().__init__(modelpool, device, **options)
        self._text_embeddings: Dict[str, Tensor] = {}
        self._processor = None
        self.visual_projection: Optional[nn.Module] = None
        self.logit_scale_exp: Optional[float] = None

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

    @property
    def processor(self):
        if self._processor is None:
            self._processor = self.modelpool.load_processor()
        return self._processor

    @torch.no_grad()
    def _setup_heads(self) -> None:
        """Zero-shot text embeddings of every task, as FusionBench's ``HFCLIPClassifier.set_classification_task``
        computes them (each prompt's projected text embedding normalised, averaged over the templates,
        normalised again), with all of a task's prompts in batches instead of one processor call per class.
        Not through ``CLIPClassificationMixin``: its joblib cache is keyed by task and model *path*, so a
        changed model at the same path would get stale heads."""
        if self.visual_projection is not None:
            return
        clip_model = self.modelpool.load_clip_model(PRETRAINED).to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        for task in progress(self.task_names(), desc="Zero-shot heads", nested=True):
            self._text_embeddings[task] = zero_shot_embeddings(
                clip_model, tokenizer, *get_classnames_and_templates(task)
            )
        self.visual_projection = copy.deepcopy(clip_model.visual_projection).float().requires_grad_(False)
        self.logit_scale_exp = float(clip_model.logit_scale.exp())

    def load_head(self, task: str) -> nn.Module:
        self._setup_heads()
        text_embeddings = self._text_embeddings[task]
        head = nn.Linear(text_embeddings.shape[1], text_embeddings.shape[0], bias=True)
        with torch.no_grad():
            head.weight.copy_(self.logit_scale_exp * text_embeddings.cpu())
            head.bias.zero_()
        return head.to(self.device)

    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        self._setup_heads()
        pooled = encoder_output[1]
        embeddings = self.visual_projection(pooled.to(self.visual_projection.weight.dtype))
        return embeddings / embeddings.norm(p=2, dim=-1, keepdim=True)

    def input_shape(self, encoder: nn.Module) -> Sequence[int]:
        config = encoder.config
        return (config.num_channels, config.image_size, config.image_size)

    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        return [f"vision_model.encoder.layers.{i}." for i in range(len(encoder.vision_model.encoder.layers))]


__all__ = ["HFCLIPVisionFamily", "PRETRAINED"]
