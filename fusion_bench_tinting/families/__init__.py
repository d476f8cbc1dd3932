"""The model families beyond the core's (HF CLIP): sequence classification (GLUE with RoBERTa or GPT-2, the
offline text suites), OpenCLIP, image classifiers and NYUv2, each with its task-aware task pool. They join the
core's family table when this package is imported (the plugin's methods import it), and would go upstream as
follow-up pull requests."""

from __future__ import annotations

from typing import Any, Dict

from fusion_bench import BaseModelPool

from ..core.errors import TintingConfigError
from ..core.families import register_family
from ..core.options import Option, one_of

#: the sequence-classification family's option, passed to every family (the others have no projection to choose)
HEAD_PROJECTION_OPTION = Option(
    "head_projection",
    "own",
    one_of(("own", "merged")),
    "one of ['own', 'merged']",
    "the projection a classifier reads from the encoder (BERT's pooler): own (each task's, tinted with its "
    "head) | merged (merged like the encoder); others have none",
    section="The plugin's model families",
)


class FamilyOptionsMixin:
    """Model Tinting with the option ``head_projection`` of the plugin's sequence-classification family."""

    def _family_options(self) -> Dict[str, Any]:
        return {**super()._family_options(), "head_projection": self.head_projection}


register_family(
    (
        "fusion_bench.modelpool:SequenceClassificationModelPool",
        "fusion_bench.modelpool.huggingface_gpt2_classification:GPT2ForSequenceClassificationPool",
    ),
    f"{__name__}.sequence_classification:SequenceClassificationFamily",
    "SequenceClassificationModelPool (e.g. modelpool=roberta-base_glue), GPT2ForSequenceClassificationPool "
    "(modelpool=gpt-2_glue)",
)
register_family(
    (
        "fusion_bench.modelpool:ConvNextForImageClassificationPool",
        "fusion_bench.modelpool:Dinov2ForImageClassificationPool",
        "fusion_bench.modelpool:ResNetForImageClassificationPool",
        "fusion_bench_tinting.modelpools:TorchvisionResNetPool",
        "fusion_bench_tinting.modelpools:TimmImageClassifierPool",
    ),
    f"{__name__}.image_classifier:ImageClassifierFamily",
    "the ConvNeXt, DINOv2 and ResNet image-classification pools (transformers, or torchvision through "
    "fusion_bench_tinting.modelpools.TorchvisionResNetPool)",
)
register_family(
    ("fusion_bench.modelpool.nyuv2_modelpool:NYUv2ModelPool",),
    f"{__name__}.nyuv2:NYUv2Family",
    "NYUv2ModelPool (modelpool=nyuv2_modelpool)",
)
register_family(  # tried first: the CLIP vision family must not take these pools
    ("fusion_bench.modelpool:OpenCLIPVisionModelPool",),
    f"{__name__}.open_clip:OpenCLIPVisionFamily",
    "OpenCLIPVisionModelPool (e.g. modelpool=OpenCLIPVisionModelPool/ViT-B-32_TA8)",
)


def refuse_torchvision_resnet_pool(modelpool: BaseModelPool) -> None:
    """FusionBench's torchvision ResNet pool cannot hold fine-tuned weights; name a pool that can."""
    if getattr(modelpool, "type", None) == "torchvision" and not getattr(modelpool, "loads_fine_tuned_weights", False):
        raise TintingConfigError(
            "modelpool.type='torchvision': FusionBench's ResNetForImageClassificationPool builds torchvision "
            "ResNets with torchvision's own weights only, so it holds no fine-tuned models; use "
            "_target_: fusion_bench_tinting.modelpools.TorchvisionResNetPool, whose entries "
            "{model_name, num_classes, state_dict} load fine-tuned checkpoints."
        )
