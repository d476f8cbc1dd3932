"""Model pools for suites FusionBench 0.2.33 has no working pool for.

``SequenceClassificationEncoderPool`` follows the design of FusionBench's GPT-2 GLUE pool for any
``*ForSequenceClassification`` checkpoints (RoBERTa, BERT, ...): ``load_model`` gives the *encoder*
(what merging methods merge; every task's has the same shapes even when their heads differ, e.g.
STS-B's single output) and ``load_classifier`` gives the whole fine-tuned classifier with its head, so
that FusionBench's own merging methods (Task Arithmetic, TIES, EMR, ...) and ours run on the same pool
and the task pool evaluates each task with its own head.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from fusion_bench.modelpool import BaseModelPool, ResNetForImageClassificationPool, SequenceClassificationModelPool
from omegaconf import DictConfig
from torch import nn


class SequenceClassificationEncoderPool(SequenceClassificationModelPool):
    def load_classifier(self, name: str, *args, **kwargs) -> nn.Module:
        """The whole fine-tuned classifier (encoder and head) of ``name``."""
        return super().load_model(name, *args, **kwargs)

    def load_model(self, name, *args, **kwargs) -> nn.Module:
        """The encoder (base model) of ``name``'s classifier."""
        classifier = self.load_classifier(name, *args, **kwargs)
        return getattr(classifier, classifier.base_model_prefix)

    def save_model(self, model: nn.Module, path: str, **kwargs) -> None:
        model.save_pretrained(path)


class TimmImageClassifierPool(BaseModelPool):
    """timm image classifiers stored as safetensors state dicts (``models``: name -> file), all of one
    ``architecture`` with ``num_classes`` outputs; ``processor``: a Hugging Face image-processor folder.
    ``class_names`` registers tasks that FusionBench's class-name registry lacks (its image task pools read
    the class count there). BatchNorm's ``num_batches_tracked`` counters are kept as floats: FusionBench's
    merging methods do arithmetic on every tensor of a state dict and refuse an integer one."""

    def __init__(
        self,
        models,
        *,
        architecture: str,
        num_classes: int,
        processor: str,
        class_names: Optional[Dict[str, List[str]]] = None,
        **kwargs,
    ):
        super().__init__(models, **kwargs)
        self.architecture, self.num_classes, self.processor = architecture, int(num_classes), processor
        from fusion_bench.tasks.clip_classification import CLIPTemplateFactory

        templates = [lambda c: f"a photo of a {c}."]
        for task, names in (class_names or {}).items():
            if task not in CLIPTemplateFactory.get_available_datasets():
                # through `dataset_info`: FusionBench 0.2.33 stores `templates=` under a misspelt key
                info = {"classnames": list(names), "templates": templates}
                CLIPTemplateFactory.register_dataset(
                    task, dataset_info=info, classnames=info["classnames"], templates=templates
                )

    def load_model(self, model_name_or_config, *args, **kwargs) -> nn.Module:
        import timm

        path = (
            self._models.get(model_name_or_config, model_name_or_config)
            if isinstance(model_name_or_config, str)
            else model_name_or_config
        )
        model = timm.create_model(self.architecture, pretrained=False, num_classes=self.num_classes)
        return load_weights(model, str(path))

    def image_processor(self):
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(self.processor)


class TorchvisionResNetPool(ResNetForImageClassificationPool):
    """FusionBench's ResNet pool with ``type: torchvision`` whose models can be fine-tuned checkpoints: an entry
    ``{model_name: resnet18, num_classes: 10, state_dict: <file>.safetensors}`` builds torchvision's
    architecture and loads the file (FusionBench 0.2.33's pool builds torchvision's architectures with
    torchvision's own weights only, so it cannot hold fine-tuned models). Other entries load as FusionBench
    does. ``processor``: a Hugging Face image-processor folder, used to preprocess the test images."""

    #: the core's image-classifier family takes ``type: torchvision`` pools only with this
    loads_fine_tuned_weights = True

    def __init__(self, models, *, processor: str, type: str = "torchvision", **kwargs):
        if type != "torchvision":
            raise ValueError(f"TorchvisionResNetPool holds torchvision ResNets (type: torchvision), not type={type!r}")
        super().__init__(models, type=type, **kwargs)
        self.processor = processor

    def load_model(self, model_name_or_config, *args, **kwargs) -> nn.Module:
        entry = model_name_or_config
        if isinstance(entry, str) and entry in self._models:
            entry = self._models[entry]
        if isinstance(entry, (dict, DictConfig)) and "state_dict" in entry:
            import torchvision

            model = getattr(torchvision.models, entry["model_name"])(num_classes=int(entry["num_classes"]))
            return load_weights(model, str(entry["state_dict"]))
        return super().load_model(model_name_or_config, *args, **kwargs)

    def image_processor(self):
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(self.processor)


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """``model`` in eval mode with the safetensors state dict at ``path``; BatchNorm's ``num_batches_tracked``
    counters (absent from the file, or integers) become floats, as FusionBench's merging methods need."""
    from safetensors.torch import load_file

    missing = model.load_state_dict(load_file(path), strict=False).missing_keys
    if any(not key.endswith("num_batches_tracked") for key in missing):
        raise ValueError(f"{path}: no values for {[k for k in missing if not k.endswith('num_batches_tracked')][:5]}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_batches_tracked is not None:
            module.num_batches_tracked = module.num_batches_tracked.float()
    return model.eval()
