"""A tiny NYUv2 suite for FusionBench's own ``NYUv2ModelPool`` and ``NYUv2TaskPool``.

FusionBench's pool builds a dilated ResNet-50 with ImageNet weights (fetched through torch's hub cache)
and DeepLab heads on its 2048 channels, and its task pool reads ``<data_dir>/nyuv2/{train,val}`` as
NumPy files and scores 288x384 outputs. So the suite keeps those classes and sizes but makes the rest
small: the "ImageNet" weights are a random ResNet-50 written into a local torch hub cache (``TORCH_HOME``),
the images are 24x32 (the outputs are upsampled to 288x384 by FusionBench's model), and each task's model
is fine-tuned for a few Adam steps, with FusionBench's NYUv2 losses, on synthetic targets computed from the
images (each task from its own colour channel, so that the tasks are learnable and differ).

A check that the pieces work together and that tinting recovers what Task Arithmetic loses, so each
teacher must be clearly better than the merge on the validation images: they are the first training images
(a teacher fine-tuned on a handful of random images does not generalise, and whether it then beats the
merge on unseen ones is down to floating-point luck), and each decoder is finally fitted to its own
encoder's features. Its numbers say nothing about real NYUv2.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List
from unittest import mock

import numpy as np
import torch
from omegaconf import OmegaConf

from .tiny_suites import reused_build, stamp_build

TASKS = ("segmentation", "depth", "normal")
OUTPUT_SIZE = (288, 384)  # what FusionBench's NYUv2 model upsamples to and its metrics compare against
IMAGE_SIZE = (24, 32)
IGNORED_ROWS = 8  # of each segmentation target, labelled -1
FOLDERS = ("image", "label", "depth", "normal")
SUITE = "tiny-nyuv2"


@dataclass
class TinyNYUv2Spec:
    train_size: int = 16
    val_size: int = 8
    #: enough to move the encoder: with smaller task vectors Task Arithmetic (0.3 x each) is already as good as
    #: the fine-tuned models and a tinting run has nothing to recover
    finetune_steps: int = 30
    finetune_lr: float = 1e-3
    #: full-batch Adam steps on the decoder alone, on its fine-tuned encoder's features (see module doc)
    decoder_fit_steps: int = 100
    seed: int = 0
    version: int = 3


def _targets(image: np.ndarray) -> Dict[str, np.ndarray]:
    """Learnable per-pixel targets of an image (H, W, 3) at the output size: segmentation from red, depth from
    green, normals from blue."""
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], OUTPUT_SIZE, mode="bilinear", align_corners=True
    )[0]
    red, green, blue = upsampled
    scored = red[:, IGNORED_ROWS:]  # FusionBench's segmentation loss and metric ignore -1
    # red scaled to its own range in the image: a smooth image then holds every class, and FusionBench's mIoU
    # (a plain mean over the classes) is defined
    label = torch.clamp(((red - scored.min()) / (scored.max() - scored.min()) * 13).long(), 0, 12).float()
    label[:, :IGNORED_ROWS] = -1
    normal = torch.stack([2 * (blue - 0.5), 0.5 - blue, torch.full_like(blue, 0.5)])
    normal = normal / normal.norm(dim=0, keepdim=True)
    depth = (1.0 + 2.0 * green)[None]
    return {"label": label.numpy(), "depth": depth.permute(1, 2, 0).numpy(), "normal": normal.permute(1, 2, 0).numpy()}


def _write_split(root: Path, size: int, rng: np.random.Generator) -> None:
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(size):
        coarse = rng.random((3, 3, 4)).astype(np.float32)  # smooth images: upsampled random 3x4 grids
        image = (
            torch.nn.functional.interpolate(
                torch.from_numpy(coarse)[None], IMAGE_SIZE, mode="bilinear", align_corners=True
            )[0]
            .permute(1, 2, 0)
            .numpy()
        )
        np.save(root / "image" / f"{index}.npy", image)
        for name, value in _targets(image).items():
            np.save(root / name / f"{index}.npy", value)


def _copy_split(source: Path, root: Path, size: int) -> None:
    """The first ``size`` images of ``source`` (with their targets) as the split in ``root``."""
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(size):
            shutil.copyfile(source / folder / f"{index}.npy", root / folder / f"{index}.npy")


def _hub_weights(torch_home: Path, seed: int) -> None:
    """A random ResNet-50 where torch's hub cache keeps FusionBench's ImageNet download."""
    from fusion_bench.models.nyuv2 import resnet

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(
        resnet.resnet50(pretrained=False).state_dict(), folder / resnet.model_urls["resnet50"].rsplit("/", 1)[-1]
    )


@torch.no_grad()
def _calibrate_batchnorm(model, train_root: Path) -> None:
    """Running statistics of the random network measured on the training images, so that it computes
    sensible values in eval mode (a random ResNet-50's activations grow block after block otherwise)."""
    from fusion_bench.dataset.nyuv2 import NYUv2

    data = NYUv2(root=str(train_root.parent), train=True)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    model.train()
    model(torch.stack([data[i][0] for i in range(len(data))]))
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def _finetune(model, task: str, train_root: Path, spec: TinyNYUv2Spec, seed: int) -> None:
    """A few Adam steps with FusionBench's loss for the task (batches of 4, the model as the pool loads it, in
    training mode), then the decoder fitted to the fine-tuned encoder (:func:`_fit_decoder`)."""
    from fusion_bench.dataset.nyuv2 import NYUv2
    from fusion_bench.metrics.nyuv2.loss import loss_fn

    data = NYUv2(root=str(train_root.parent), train=True)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.finetune_lr)
    for _ in range(spec.finetune_steps):
        batch = [data[int(i)] for i in torch.randint(0, len(data), (4,), generator=generator)]
        images = torch.stack([b[0] for b in batch])
        target = torch.stack([b[1][task] for b in batch])
        loss = loss_fn[task](model(images, [task])[task], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _fit_decoder(model, task, data, spec)


def _fit_decoder(model, task: str, data, spec: TinyNYUv2Spec) -> None:
    """Full-batch Adam steps on the decoder alone, in eval mode (BatchNorm's running statistics, no dropout: the
    features evaluation sees), its encoder's features computed once and the loss taken at the image size (not
    FusionBench's 288x384, which would cost far more per step)."""
    from fusion_bench.metrics.nyuv2.loss import loss_fn

    images = torch.stack([data[i][0] for i in range(len(data))])
    target = _at_image_size(torch.stack([data[i][1][task] for i in range(len(data))]), task)
    model.eval()
    with torch.no_grad():
        features = model.encode(images)
    optimizer = torch.optim.Adam(model.decoders.parameters(), lr=spec.finetune_lr)
    for _ in range(spec.decoder_fit_steps):
        output = torch.nn.functional.interpolate(
            model.decode(features, task), IMAGE_SIZE, mode="bilinear", align_corners=True
        )
        loss = loss_fn[task](output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _at_image_size(target: torch.Tensor, task: str) -> torch.Tensor:
    """A task's targets resized (nearest) to the image size; segmentation labels (N, H, W) have no channel axis."""
    if task == "segmentation":
        return torch.nn.functional.interpolate(target[:, None], IMAGE_SIZE)[:, 0]
    return torch.nn.functional.interpolate(target, IMAGE_SIZE)


def _models(root: Path, spec: TinyNYUv2Spec) -> Dict[str, Dict]:
    """The pretrained model (all three decoders) and one fine-tuned model per task, as checkpoints."""
    from fusion_bench.modelpool.nyuv2_modelpool import NYUv2ModelPool

    pool = NYUv2ModelPool(
        OmegaConf.create({"_pretrained_": {"encoder": "resnet50", "decoders": list(TASKS), "ckpt_path": None}})
    )
    torch.manual_seed(spec.seed)
    pretrained = pool.load_model("_pretrained_", encoder_only=False)
    _calibrate_batchnorm(pretrained, root / "data" / "nyuv2" / "train")
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(pretrained.state_dict(), root / "models" / "pretrained.ckpt")
    entries = {
        "_pretrained_": {
            "encoder": "resnet50",
            "decoders": list(TASKS),
            "ckpt_path": str(root / "models" / "pretrained.ckpt"),
        }
    }
    for index, task in enumerate(TASKS):
        model = pool.load_model("_pretrained_", encoder_only=False)
        model.load_state_dict(pretrained.state_dict())
        model.decoders = torch.nn.ModuleDict({task: model.decoders[task]})
        _finetune(model, task, root / "data" / "nyuv2" / "train", spec, spec.seed + index)
        path = root / "models" / f"{task}.ckpt"
        torch.save({"state_dict": model.state_dict()}, path)
        entries[task] = {"encoder": "resnet50", "decoders": [task], "ckpt_path": str(path)}
    return entries


def build_tiny_nyuv2(out, spec: TinyNYUv2Spec = TinyNYUv2Spec()) -> List[str]:
    """Build (or reuse) the suite in ``out``; runs need ``TORCH_HOME=<out>/torch_home`` (see :func:`torch_home`)."""
    out = Path(out).resolve()
    reused = reused_build(out, spec)
    if reused is not None:
        return reused
    if spec.val_size > spec.train_size:
        raise ValueError(
            f"val_size ({spec.val_size}) must not exceed train_size ({spec.train_size}): the "
            f"validation images are the first training images"
        )
    rng = np.random.default_rng(spec.seed)
    _write_split(out / "data" / "nyuv2" / "train", spec.train_size, rng)
    _copy_split(out / "data" / "nyuv2" / "train", out / "data" / "nyuv2" / "val", spec.val_size)
    _hub_weights(torch_home(out), spec.seed)
    with mock.patch.dict(os.environ, {"TORCH_HOME": str(torch_home(out))}):  # FusionBench's pool reads the cache
        entries = _models(out, spec)
    _write_configs(out / "config", entries, out / "data")
    return stamp_build(out, spec, [SUITE])


def torch_home(out) -> Path:
    return Path(out).resolve() / "torch_home"


def _write_configs(config: Path, entries: Dict[str, Dict], data_dir: Path) -> None:
    from ..suites import write_suite_config

    modelpool = {"_target_": "fusion_bench.modelpool.nyuv2_modelpool.NYUv2ModelPool", "models": entries}
    taskpool = {
        "type": "NYUv2TaskPool",
        "data_dir": str(data_dir),
        "tasks": list(TASKS),
        "batch_size": 4,
        "num_workers": 0,
    }
    for group, content in (("modelpool", modelpool), ("taskpool", taskpool)):
        (config / group).mkdir(parents=True, exist_ok=True)
        (config / group / f"{SUITE}.yaml").write_text(
            "# Tiny NYUv2 suite built by fusion_bench_tinting.testing.tiny_nyuv2\n"
            + OmegaConf.to_yaml(OmegaConf.create(content))
        )
    write_suite_config(config, SUITE)
