"""OpenCLIP image encoders of the task_vectors checkpoints (FusionBench's ``OpenCLIPVisionModelPool``),
the checkpoints the Model Tinting paper uses.

Encoder: FusionBench's ``ImageEncoder`` (its forward returns projected image features). Head of task
k: the pool's ``ClassificationHead`` (normalises its input, weight ``logit_scale.exp() * T_k``, bias).
Only the visual tower is merged: the text-side leftovers of the checkpoint are never used on images.
"""

from __future__ import annotations

import copy
import logging
import pickle
from typing import Any, List, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import Subset

from ..compat import ensure_typing_override
from ..core.data import TensorInputs, cache_inputs
from ..core.errors import TintingConfigError
from ..core.families.base import PRETRAINED, ModelFamily

ensure_typing_override()

log = logging.getLogger(__name__)

from fusion_bench.dataset.image_dataset import ImageClassificationDataset  # noqa: E402
from fusion_bench.modelpool import OpenCLIPVisionModelPool  # noqa: E402
from fusion_bench.modelpool.openclip_vision.modelpool import (  # noqa: E402
    _check_and_redirect_open_clip_modeling,
)


def _load_checkpoint(path: str, model_name: Optional[str]) -> Any:
    """A state dict read with ``weights_only=True`` where the file is one (nothing in it can run); else the
    pickled encoder, unpickled in full: that runs whatever the file names, so the log says which file is trusted."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if model_name is not None and isinstance(state, Mapping):
            return state
    except pickle.UnpicklingError:
        pass
    log.warning(
        "Unpickling %s in full (weights_only=False, a pickled OpenCLIP encoder): it can run code, "
        "so it is trusted as the model pool names it.",
        path,
    )
    return torch.load(path, map_location="cpu", weights_only=False)


def load_pickled_encoder(modelpool: OpenCLIPVisionModelPool, name: str) -> nn.Module:
    """Load an encoder of the pool, reading the task_vectors pickles with ``weights_only=False``.

    FusionBench 0.2.33 loads those pickles with ``torch.load(weights_only=True)`` and falls back to
    ``pickle.load`` only on ``RuntimeError``; since torch 2.6 the first raises ``UnpicklingError`` and the
    second cannot read torch's zip format, so the pool cannot load them. The checkpoints are whole pickled
    ``ImageEncoder`` objects: load them only from sources you trust (a state dict saved with ``torch.save`` is
    read with ``weights_only=True`` instead and needs ``model_name``). Other config forms go to the pool.
    """
    config = modelpool._models[name] if name in modelpool._models else name
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, str):
        path, model_name = config, None
    elif isinstance(config, dict) and set(config) == {"model_name", "pickle_path"}:
        path, model_name = config["pickle_path"], config["model_name"]
    else:
        return modelpool.load_model(name)
    _check_and_redirect_open_clip_modeling()
    encoder = _load_checkpoint(path, model_name)
    if model_name is not None and not isinstance(encoder, nn.Module):  # a state dict, read safely
        from fusion_bench.models.open_clip import ImageEncoder

        rebuilt = ImageEncoder(model_name)
        rebuilt.load_state_dict(encoder)
        encoder = rebuilt
    elif model_name is not None:
        # As FusionBench does: rebuild the encoder with the installed open_clip/torchvision and copy
        # the weights, so pickled preprocessing transforms from older versions are not used.
        from fusion_bench.models.open_clip import ImageEncoder

        rebuilt = ImageEncoder(model_name)
        rebuilt.load_state_dict(encoder.state_dict())
        encoder = rebuilt
    # keep the pool's processors in step, as its own `load_model` would
    if modelpool._train_processor is None and hasattr(encoder, "train_preprocess"):
        modelpool._train_processor = encoder.train_preprocess
    if modelpool._test_processor is None and hasattr(encoder, "val_preprocess"):
        modelpool._test_processor = encoder.val_preprocess
    return encoder


class OpenCLIPVisionFamily(ModelFamily):
    modelpool: OpenCLIPVisionModelPool

    def validate_task(self, task: str) -> None:
        super().validate_task(task)
        heads = self.modelpool._classification_heads
        if heads is None or task not in heads:
            raise TintingConfigError(
                f"Task {task!r} has no classification head in the OpenCLIP model pool "
                f"(`modelpool.classification_heads` has {list(heads or {})})."
            )

    def load_encoder(self, name: str) -> nn.Module:
        return load_pickled_encoder(self.modelpool, name).eval().requires_grad_(False)

    def load_head(self, task: str) -> nn.Module:
        head = copy.deepcopy(self.modelpool.load_classification_head(task))
        return head.float().to(self.device).requires_grad_(False)

    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        return encoder_output

    def merged_parameter_names(self, encoder: nn.Module) -> List[str]:
        return [name for name, _ in encoder.named_parameters() if name.startswith("model.visual.")]

    def input_shape(self, encoder: nn.Module) -> Optional[Sequence[int]]:
        size = getattr(encoder.model.visual, "image_size", None)
        if size is None:
            return None
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (3, height, width)

    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        blocks = encoder.model.visual.transformer.resblocks
        return [f"model.visual.transformer.resblocks.{i}." for i in range(len(blocks))]

    def adaptation_inputs(
        self,
        task: str,
        *,
        batch_size: int,
        num_workers: int,
        dtype: torch.dtype,
        indices: Optional[Sequence[int]] = None,
    ) -> TensorInputs:
        if self.modelpool._test_processor is None:  # set as a side effect of loading an encoder
            load_pickled_encoder(self.modelpool, PRETRAINED)
        processor = self.modelpool.test_processor
        dataset = ImageClassificationDataset(self.adaptation_dataset(task), processor)
        if indices is not None:
            dataset = Subset(dataset, list(indices))
        return cache_inputs(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            dtype=dtype,
            desc=f"Preprocessing {task}",
            normalization=_normalization(processor),
        )


def _normalization(preprocess) -> Optional[tuple]:
    """Mean and std of the ``Normalize`` step of a torchvision preprocessing pipeline, if it has one."""
    from torchvision.transforms import Normalize

    for step in getattr(preprocess, "transforms", []):
        if isinstance(step, Normalize):
            return tuple(step.mean), tuple(step.std)
    return None
