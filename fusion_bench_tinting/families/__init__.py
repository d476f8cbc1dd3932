"""Model families: how the family-agnostic tinting algorithm talks to each kind of model pool."""

from __future__ import annotations

import torch
from lightning import Fabric

from fusion_bench import BaseModelPool

from ..compat import ensure_typing_override
from ..errors import TintingConfigError
from .base import PRETRAINED, ModelFamily


def family_for(modelpool: BaseModelPool, fabric: Fabric) -> ModelFamily:
    """The family adapter for ``modelpool``; a clear error for pools we do not support."""
    ensure_typing_override()
    from fusion_bench.modelpool import CLIPVisionModelPool, OpenCLIPVisionModelPool

    device = torch.device(fabric.device)
    if isinstance(modelpool, OpenCLIPVisionModelPool):
        from .open_clip import OpenCLIPVisionFamily

        return OpenCLIPVisionFamily(modelpool, device)
    if isinstance(modelpool, CLIPVisionModelPool):
        from .hf_clip import HFCLIPVisionFamily

        return HFCLIPVisionFamily(modelpool, device)
    from fusion_bench.modelpool import SequenceClassificationModelPool
    from fusion_bench.modelpool.huggingface_gpt2_classification import GPT2ForSequenceClassificationPool

    if isinstance(modelpool, (SequenceClassificationModelPool, GPT2ForSequenceClassificationPool)):
        from .sequence_classification import SequenceClassificationFamily

        return SequenceClassificationFamily(modelpool, device)
    from fusion_bench.modelpool import (
        ConvNextForImageClassificationPool,
        Dinov2ForImageClassificationPool,
        ResNetForImageClassificationPool,
    )

    from ..modelpools import TimmImageClassifierPool, TorchvisionResNetPool

    if getattr(modelpool, "type", None) == "torchvision" and not isinstance(modelpool, TorchvisionResNetPool):
        raise TintingConfigError(
            "modelpool.type='torchvision': FusionBench's ResNetForImageClassificationPool builds torchvision "
            "ResNets with torchvision's own weights only, so it holds no fine-tuned models; use "
            "_target_: fusion_bench_tinting.modelpools.TorchvisionResNetPool, whose entries "
            "{model_name, num_classes, state_dict} load fine-tuned checkpoints."
        )
    image_pools = (
        ConvNextForImageClassificationPool, Dinov2ForImageClassificationPool, ResNetForImageClassificationPool,
        TimmImageClassifierPool,
    )
    if isinstance(modelpool, image_pools):
        from .image_classifier import ImageClassifierFamily

        return ImageClassifierFamily(modelpool, device)
    from fusion_bench.modelpool.nyuv2_modelpool import NYUv2ModelPool

    if isinstance(modelpool, NYUv2ModelPool):
        from .nyuv2 import NYUv2Family

        return NYUv2Family(modelpool, device)
    raise TintingConfigError(
        f"Model Tinting does not support model pools of type {type(modelpool).__name__}; supported: "
        "CLIPVisionModelPool (e.g. modelpool=clip-vit-base-patch32_TA8), OpenCLIPVisionModelPool "
        "(e.g. modelpool=OpenCLIPVisionModelPool/ViT-B-32_TA8), SequenceClassificationModelPool "
        "(e.g. modelpool=roberta-base_glue), GPT2ForSequenceClassificationPool (modelpool=gpt-2_glue) and the "
        "ConvNeXt, DINOv2 and ResNet image-classification pools (transformers, or torchvision through "
        "fusion_bench_tinting.modelpools.TorchvisionResNetPool) and NYUv2ModelPool (modelpool=nyuv2_modelpool)."
    )


__all__ = ["ModelFamily", "PRETRAINED", "family_for"]
