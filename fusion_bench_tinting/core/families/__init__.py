"""Model families: how the family-agnostic tinting algorithm talks to each kind of model pool."""

from __future__ import annotations

import importlib
from typing import Any, List, Tuple

import torch
from fusion_bench import BaseModelPool
from lightning import Fabric

from ..compat import ensure_typing_override
from ..errors import TintingConfigError
from .base import PRETRAINED, ModelFamily

# (model pool classes, family class) in the order they are tried, as "module:name" so that a family's
# dependencies (open_clip, timm, ...) are imported only when its pool is in use; :func:`register_pools` adds
# model pool classes defined elsewhere.
_FAMILIES: List[Tuple[Tuple[str, ...], str]] = [
    (("fusion_bench.modelpool:OpenCLIPVisionModelPool",), ".open_clip:OpenCLIPVisionFamily"),
    (("fusion_bench.modelpool:CLIPVisionModelPool",), ".hf_clip:HFCLIPVisionFamily"),
    (
        (
            "fusion_bench.modelpool:SequenceClassificationModelPool",
            "fusion_bench.modelpool.huggingface_gpt2_classification:GPT2ForSequenceClassificationPool",
        ),
        ".sequence_classification:SequenceClassificationFamily",
    ),
    (
        (
            "fusion_bench.modelpool:ConvNextForImageClassificationPool",
            "fusion_bench.modelpool:Dinov2ForImageClassificationPool",
            "fusion_bench.modelpool:ResNetForImageClassificationPool",
        ),
        ".image_classifier:ImageClassifierFamily",
    ),
    (("fusion_bench.modelpool.nyuv2_modelpool:NYUv2ModelPool",), ".nyuv2:NYUv2Family"),
]
#: the families by name, for :func:`register_pools`
FAMILY_NAMES = {
    "open_clip": ".open_clip:OpenCLIPVisionFamily",
    "hf_clip": ".hf_clip:HFCLIPVisionFamily",
    "sequence_classification": ".sequence_classification:SequenceClassificationFamily",
    "image_classifier": ".image_classifier:ImageClassifierFamily",
    "nyuv2": ".nyuv2:NYUv2Family",
}


def register_pools(family: str, *pools: str) -> None:
    """Adapt model pools of the classes ``pools`` ("module:name") with the family named ``family`` (a key of
    :data:`FAMILY_NAMES`), before the pools the family already takes."""
    _FAMILIES.insert(0, (pools, FAMILY_NAMES[family]))


def _load(path: str) -> type:
    """The class named by "module:name" (a module beginning with a dot is relative to this package)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module, __package__), name)


def _refuse_torchvision_resnet_pool(modelpool: BaseModelPool) -> None:
    """FusionBench's torchvision ResNet pool cannot hold fine-tuned weights; name a pool that can."""
    if getattr(modelpool, "type", None) != "torchvision":
        return
    if not getattr(modelpool, "loads_fine_tuned_weights", False):
        raise TintingConfigError(
            "modelpool.type='torchvision': FusionBench's ResNetForImageClassificationPool builds torchvision "
            "ResNets with torchvision's own weights only, so it holds no fine-tuned models; use "
            "_target_: fusion_bench_tinting.modelpools.TorchvisionResNetPool, whose entries "
            "{model_name, num_classes, state_dict} load fine-tuned checkpoints."
        )


def family_for(modelpool: BaseModelPool, fabric: Fabric, adaptation_split: str = "test", **options: Any) -> ModelFamily:
    """The family adapter for ``modelpool`` (adapting on its ``adaptation_split`` datasets; ``options``: the
    family's other constructor arguments), fully configured; a clear error for pools we do not support."""
    ensure_typing_override()
    _refuse_torchvision_resnet_pool(modelpool)
    for pools, family in _FAMILIES:
        if isinstance(modelpool, tuple(_load(pool) for pool in pools)):
            return _load(family)(modelpool, torch.device(fabric.device), adaptation_split=adaptation_split, **options)
    raise TintingConfigError(
        f"Model Tinting does not support model pools of type {type(modelpool).__name__}; supported: "
        "CLIPVisionModelPool (e.g. modelpool=clip-vit-base-patch32_TA8), OpenCLIPVisionModelPool "
        "(e.g. modelpool=OpenCLIPVisionModelPool/ViT-B-32_TA8), SequenceClassificationModelPool "
        "(e.g. modelpool=roberta-base_glue), GPT2ForSequenceClassificationPool (modelpool=gpt-2_glue) and the "
        "ConvNeXt, DINOv2 and ResNet image-classification pools (transformers, or torchvision through "
        "fusion_bench_tinting.modelpools.TorchvisionResNetPool) and NYUv2ModelPool (modelpool=nyuv2_modelpool)."
    )


__all__ = ["ModelFamily", "PRETRAINED", "family_for", "register_pools"]
