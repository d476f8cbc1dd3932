"""Image classifiers of FusionBench's ``*ForImageClassification`` pools (transformers ConvNeXt, DINOv2, ResNet;
torchvision ResNet) and of timm (EfficientNet, ResNet).

Encoder: the classifier's backbone (``convnext``, ``dinov2`` or ``resnet``; a torchvision or timm model is
its own backbone once its head is replaced by the identity). Features: what the model's own forward feeds
its classifier (ConvNeXt: the pooled, normalised output; DINOv2: the class token next to the mean of the
patch tokens; ResNet: the pooled feature map). Head of task k: the fine-tuned model's ``classifier``
(torchvision and timm ResNets: ``fc``), kept whole. Task vectors span the backbone's parameters.

Buffers: the merged backbone keeps the pretrained model's buffers, so a ResNet's BatchNorm layers normalise
with the *pretrained* running statistics while the weights are merged (BatchNorm stays in eval mode during
adaptation); ConvNeXt and DINOv2 normalise per sample (LayerNorm) and have no such statistics.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from fusion_bench.tasks.clip_classification import get_num_classes
from torch import Tensor, nn

from ..core.errors import TintingConfigError
from ..core.families.base import PRETRAINED, ModelFamily, ProcessedImageInputs
from . import refuse_torchvision_resnet_pool


def _pooled(output: Any) -> Tensor:
    return output.pooler_output


def _class_and_mean_patch_tokens(output: Any) -> Tensor:
    tokens = output.last_hidden_state
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1)


def _same(output: Tensor) -> Tensor:
    return output


@dataclass(frozen=True)
class Architecture:
    """Where a classifier keeps its backbone and how its classifier reads it."""

    #: the backbone's attribute (transformers), or None: the model itself without its head (timm)
    backbone: Optional[str]
    features: Callable[[Any], Tensor]
    #: parameter-name pattern of one block, in depth order
    block: str
    #: the attribute that holds the classification head
    head: str = "classifier"

    def classifier_of(self, model: nn.Module) -> Optional[nn.Module]:
        return getattr(model, self.head, None)

    def split(self, model: nn.Module) -> Tuple[nn.Module, nn.Module]:
        """(backbone, head) of a loaded classifier; a timm or torchvision model becomes its own backbone, its
        head removed so that its forward returns the pooled features."""
        head = getattr(model, self.head)
        if self.backbone is not None:
            return getattr(model, self.backbone), head
        if callable(getattr(model, "reset_classifier", None)):  # timm
            model.reset_classifier(0)
        else:  # torchvision
            setattr(model, self.head, nn.Identity())
        return model, head

    def join(self, task_model: nn.Module, backbone: nn.Module, head: nn.Module) -> nn.Module:
        """A classifier (pixels -> logits) from a backbone and a head, in the task model's layout."""
        if self.backbone is None:
            return nn.Sequential(backbone, head)
        setattr(task_model, self.backbone, backbone)
        setattr(task_model, self.head, head)
        return task_model


ARCHITECTURES: Dict[str, Architecture] = {
    "ConvNextForImageClassification": Architecture("convnext", _pooled, r"encoder\.stages\.\d+\.layers\.\d+\."),
    "Dinov2ForImageClassification": Architecture("dinov2", _class_and_mean_patch_tokens, r"encoder\.layer\.\d+\."),
    "ResNetForImageClassification": Architecture("resnet", _pooled, r"encoder\.stages\.\d+\.layers\.\d+\."),
    "EfficientNet": Architecture(None, _same, r"blocks\.\d+\.\d+\."),  # timm (TimmImageClassifierPool)
    "ResNet": Architecture(None, _same, r"layer\d+\.\d+\.", head="fc"),  # torchvision (TorchvisionResNetPool), timm
}


def architecture_of(model: nn.Module, name: str) -> Architecture:
    kind = type(model).__name__
    if kind not in ARCHITECTURES:
        raise TintingConfigError(
            f"Model {name!r} is a {kind}; Model Tinting's image-classifier family reads "
            f"{', '.join(sorted(ARCHITECTURES))}."
        )
    return ARCHITECTURES[kind]


class ImageClassifierFamily(ProcessedImageInputs, ModelFamily):
    """FusionBench's ConvNeXt, DINOv2 and (transformers) ResNet image-classification pools."""

    def __init__(self, modelpool, device: torch.device, **options: Any):
        refuse_torchvision_resnet_pool(modelpool)
        super().__init__(modelpool, device, **options)
        self._architecture: Optional[Tuple[str, Architecture]] = None
        self._last: Optional[Tuple[str, nn.Module]] = None  # the encoder and head of a task come from one load
        self._processor = None
        self._head: Optional[nn.Module] = None

    def _load(self, name: str) -> nn.Module:
        if self._last is None or self._last[0] != name:
            model = self.modelpool.load_model(name)
            architecture = architecture_of(model, name)
            if self._architecture is None:
                self._architecture = (type(model).__name__, architecture)
            elif self._architecture[0] != type(model).__name__:
                raise TintingConfigError(
                    f"Model {name!r} is a {type(model).__name__} but {PRETRAINED} is a {self._architecture[0]}: "
                    "every model of the pool must have the pretrained model's architecture."
                )
            self._last = (name, model)
        return self._last[1]

    @property
    def architecture(self) -> Architecture:
        if self._architecture is None:
            self._load(PRETRAINED)
        return self._architecture[1]

    def validate_task(self, task: str) -> None:
        super().validate_task(task)
        get_num_classes(task)  # the task's classes are known to FusionBench (its task pools need them)

    def load_encoder(self, name: str) -> nn.Module:
        backbone, self._head = self.architecture.split(self._load(name))
        return backbone.eval().requires_grad_(False)

    def load_head(self, task: str) -> nn.Module:
        architecture = self.architecture
        head = (
            self._head
            if self._last is not None and self._last[0] == task
            else architecture.classifier_of(self._load(task))
        )
        if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
            raise TintingConfigError(
                f"The model of task {task!r} has no classification head (`{architecture.head}`): fine-tuned models "
                "of an image-classification pool must carry their task's head."
            )
        self._last = None  # the fine-tuned model is not needed any more
        return head.to(self.device)

    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        return self.architecture.features(encoder_output)

    def encoder_arguments(self, inputs: Any) -> Tuple[tuple, dict]:
        # transformers backbones take ``pixel_values=``; timm models the images as their one argument
        return ((), {"pixel_values": inputs}) if self.architecture.backbone is not None else ((inputs,), {})

    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        pattern = re.compile(self.architecture.block)
        prefixes: List[str] = []
        for name, _ in encoder.named_parameters():
            match = pattern.match(name)
            if match and match.group(0) not in prefixes:
                prefixes.append(match.group(0))
        return prefixes

    def num_outputs(self, task: str) -> Optional[int]:
        return get_num_classes(task)

    def input_shape(self, encoder: nn.Module) -> Optional[Sequence[int]]:
        return None  # convolutional backbones read any image size; DINOv2 interpolates its positions

    @property
    def processor(self):
        """The pretrained model's image processor (read directly: the ConvNeXt and DINOv2 pools'
        ``load_processor`` expects a mapping where their shipped configs give the model id as a string)."""
        if self._processor is None and callable(getattr(self.modelpool, "image_processor", None)):
            self._processor = self.modelpool.image_processor()  # our TimmImageClassifierPool
        if self._processor is None:
            from transformers import AutoImageProcessor

            entry = self.modelpool._models[PRETRAINED]
            source = entry if isinstance(entry, str) else entry["config_path"]
            self._processor = AutoImageProcessor.from_pretrained(source)
        return self._processor


def task_classifier(modelpool, task: str, model: nn.Module) -> nn.Module:
    """Task ``task``'s fine-tuned classifier with ``model``'s (merged) backbone in place of its own and, when
    ``model`` has one for the task, ``model``'s head in place of the fine-tuned one. ``model`` is a merged
    backbone (Model Tinting's result) or a whole merged classifier (e.g. FusionBench's Task Arithmetic),
    whose backbone is then taken. Its forward returns logits, as the pool's models do."""
    if callable(getattr(model, "set_task", None)):
        model.set_task(task)
    task_model = modelpool.load_model(task)
    architecture = architecture_of(task_model, task)
    backbone = model
    if type(model).__name__ in ARCHITECTURES:  # a whole merged classifier: its backbone
        backbone = architecture.split(copy.deepcopy(model))[0]
    task_head = getattr(model, "task_head", None)
    head = task_head(task) if callable(task_head) else None
    return architecture.join(
        task_model, backbone, head if head is not None else architecture.classifier_of(task_model)
    ).eval()


__all__ = ["ImageClassifierFamily", "ARCHITECTURES", "task_classifier"]
