"""NYUv2 dense prediction: FusionBench's ``NYUv2ModelPool`` (a dilated ResNet encoder, one DeepLab head per task).

Encoder: the dilated ResNet; features: its output map (batch, 2048, h, w). Head of task k: the fine-tuned
model's DeepLab decoder for k, the tinted layer. Teacher targets are the fine-tuned model's decoder outputs
at the decoder's resolution (before the bilinear upsampling that FusionBench applies to student and teacher
alike), and every pixel is a sample of the loss:

- segmentation: cross-entropy against the teacher's per-pixel argmax (the method's ``loss``; Model
  Tinting++'s confidence filter decides per pixel);
- depth: L1 against the teacher's depth, and surface normals: cosine distance to the teacher's normals
  (1 - cosine similarity), the losses FusionBench trains these decoders with (``fusion_bench.metrics.nyuv2``),
  with the teacher in place of the ground truth. Neither is a class distribution, so neither is filtered.

Test inputs: the NYUv2 validation images (``<data_dir>/nyuv2/val``), the same for every task; ``data_dir``
comes from the run's task pool config (FusionBench's ``nyuv2_taskpool`` names it; its model pool does not).
BatchNorm as for the image classifiers: the pretrained statistics, eval mode.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..cache_identity import describe_source
from ..core.data import TensorInputs
from ..core.errors import TintingConfigError
from ..core.families.base import PRETRAINED, ModelFamily

#: per task, the loss its outputs need (FusionBench's training losses for these decoders); None: ``loss``
OBJECTIVES: Dict[str, Optional[str]] = {"segmentation": None, "depth": "l1", "normal": "cosine"}


def _known_tasks() -> Dict[str, int]:
    from fusion_bench.dataset.nyuv2 import NYUv2

    return {task: channels for task, channels in NYUv2.num_out_channels.items() if task in OBJECTIVES}


class NYUv2Family(ModelFamily):
    """FusionBench's NYUv2 model pool: segmentation, depth and surface-normal decoders on one encoder."""

    #: a DeepLab decoder has ~16M parameters: Adam at a fine-tuning rate (the reference gives no NYUv2 value;
    #: 1e-2, its rate for classification heads, makes the tiny suite's depth decoder diverge)
    default_lr_tinted_layer = 1e-4

    def __init__(self, modelpool, device: torch.device, **options: Any):
        super().__init__(modelpool, device, **options)
        self._last: Optional[Tuple[str, nn.Module]] = None  # encoder and decoder of a task come from one load
        self._dataset = None

    # ----- tasks -------------------------------------------------------------------------------
    def validate_task(self, task: str) -> None:
        known = _known_tasks()
        if task not in known:
            raise TintingConfigError(
                f"Task {task!r} of the NYUv2 model pool is not a NYUv2 task FusionBench knows: use "
                f"{', '.join(sorted(known))} as the model names."
            )
        decoders = list(self.modelpool.get_model_config(task).get("decoders", []))
        if task not in decoders:
            raise TintingConfigError(
                f"The model of task {task!r} has no {task!r} decoder (its decoders: {decoders}): each fine-tuned "
                f"NYUv2 model must list its own task under `decoders`."
            )
        if self.adaptation_size(task) == 0:
            raise TintingConfigError(f"The NYUv2 validation set ({self._data_root()}) has no images to adapt on.")

    def task_objective(self, task: str) -> Optional[str]:
        return OBJECTIVES.get(task)

    def num_outputs(self, task: str) -> Optional[int]:
        return _known_tasks().get(task)

    # ----- models ------------------------------------------------------------------------------
    def _load(self, name: str) -> nn.Module:
        if self._last is None or self._last[0] != name:
            self._last = (name, self.modelpool.load_model(name, encoder_only=False))
        return self._last[1]

    def load_encoder(self, name: str) -> nn.Module:
        return self._load(name).encoder.eval().requires_grad_(False)

    def load_head(self, task: str) -> nn.Module:
        decoders = self._load(task).decoders
        if task not in decoders:
            raise TintingConfigError(f"The model of task {task!r} has no {task!r} decoder.")
        self._last = None  # the fine-tuned model is not needed any more
        return decoders[task].eval().to(self.device)

    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        return encoder_output

    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        pattern, prefixes = re.compile(r"layer\d+\.\d+\."), []
        for name, _ in encoder.named_parameters():
            match = pattern.match(name)
            if match and match.group(0) not in prefixes:
                prefixes.append(match.group(0))
        return prefixes

    def cache_identity(self, task: str) -> Dict[str, Any]:
        return {
            "family": type(self).__name__,
            "task": task,
            "model": describe_source(self.modelpool.get_model_config(task)),
            "pretrained": describe_source(self.modelpool.get_model_config(PRETRAINED)),
            "dataset": describe_source(self._data_root()),
        }

    # ----- data --------------------------------------------------------------------------------
    def _data_root(self) -> str:
        config = getattr(self.taskpool, "config", None)
        data_dir = config.get("data_dir") if config is not None else None
        if data_dir is None:
            raise TintingConfigError(
                "Where are the NYUv2 images? The run's task pool config has no `data_dir`: evaluate with "
                "FusionBench's NYUv2 task pool (taskpool=nyuv2_taskpool), which names it."
            )
        return os.path.join(str(data_dir), "nyuv2")

    def adaptation_dataset(self, task: str) -> Any:
        if self.adaptation_split != "test":
            raise TintingConfigError(
                f"method.adaptation_data={self.adaptation_split}: NYUv2 pools adapt on the task pool's NYUv2 "
                "validation images, the ones it scores (adaptation_data=test)."
            )
        if self._dataset is None:
            from fusion_bench.dataset.nyuv2 import NYUv2

            root = self._data_root()
            if not os.path.isdir(os.path.join(root, "val", "image")):
                raise TintingConfigError(
                    f"No NYUv2 validation images in {root}/val/image (FusionBench's NYUv2 layout)."
                )
            self._dataset = NYUv2(root=root, train=False)
        return self._dataset

    def adaptation_labels(self, task: str) -> Optional[Tensor]:
        return None

    def adaptation_inputs(
        self,
        task: str,
        *,
        batch_size: int,
        num_workers: int,
        dtype: torch.dtype,
        indices: Optional[Sequence[int]] = None,
    ) -> TensorInputs:
        """The validation images, kept as floats whatever ``dtype`` asks: they are stored as floats, not 8-bit."""
        dataset = self.adaptation_dataset(task)
        rows = range(len(dataset)) if indices is None else indices
        return TensorInputs(torch.stack([dataset[i][0] for i in rows]))
