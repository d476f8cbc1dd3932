"""Tiny image-classifier suites for FusionBench's pools (transformers ConvNeXt, DINOv2 and ResNet; torchvision
ResNet-18).

Like the tiny CLIP suites (same synthetic tasks, same 32x32 images): a tiny classifier of each architecture
is created from scratch as the pretrained model, then one copy per task is really fine-tuned, backbone and
10-class head together, on the task's training split. Written per architecture: the models
(``save_pretrained``), the datasets, and Hydra configs for FusionBench's own pool classes
(``ConvNextForImageClassificationPool``, ``Dinov2ForImageClassificationPool``,
``ResNetForImageClassificationPool`` with ``type: transformers``; for torchvision, its subclass
``TorchvisionResNetPool`` that loads fine-tuned state dicts) with our task-aware
``ImageClassificationTaskPool``, usable as ``modelpool=tiny-<arch>_TA4`` with ``--config-dir <out>/config``.
The torchvision suite is built only when asked (``architectures``): ResNet-18 is not tiny.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from omegaconf import OmegaConf

from ..suites import write_suite_config
from .tiny_suites import IMAGE_SIZE, NUM_CLASSES, TASKS, finetune, reused_build, stamp_build, write_synthetic_tasks

ARCHITECTURES = ("convnext", "dinov2", "resnet")
POOL_TARGETS = {
    "convnext": "fusion_bench.modelpool.ConvNextForImageClassificationPool",
    "dinov2": "fusion_bench.modelpool.Dinov2ForImageClassificationPool",
    "resnet": "fusion_bench.modelpool.ResNetForImageClassificationPool",
    "torchvision": "fusion_bench_tinting.modelpools.TorchvisionResNetPool",
}
TASKPOOL_TARGET = "fusion_bench_tinting.families.image_taskpool.TaskAwareImageClassificationTaskPool"


@dataclass
class TinyImageSuiteSpec:
    tasks: Tuple[str, ...] = TASKS
    architectures: Tuple[str, ...] = ARCHITECTURES
    train_size: int = 320
    test_size: int = 128
    finetune_steps: int = 100
    finetune_lr: float = 2e-3
    seed: int = 0
    version: int = 1


def tiny_classifier(architecture: str, seed: int):
    """A tiny ``<Arch>ForImageClassification`` with 10 classes, and a 32x32 image processor."""
    import transformers as tf

    configs = {
        "convnext": lambda: tf.ConvNextConfig(
            num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], image_size=IMAGE_SIZE
        ),
        "dinov2": lambda: tf.Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=IMAGE_SIZE, patch_size=8
        ),
        "resnet": lambda: tf.ResNetConfig(
            num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"
        ),
    }
    classes = {
        "convnext": tf.ConvNextForImageClassification,
        "dinov2": tf.Dinov2ForImageClassification,
        "resnet": tf.ResNetForImageClassification,
    }
    config = configs[architecture]()
    config.num_labels = NUM_CLASSES
    torch.manual_seed(seed)
    model = classes[architecture](config).eval()
    processor = tf.ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return model, processor


def _build_torchvision(spec: TinyImageSuiteSpec, root: Path, images) -> Dict[str, Any]:
    """A randomly initialised torchvision ResNet-18 as the pretrained model and one fine-tuned copy per task,
    as safetensors state dicts; the processor folder beside them."""
    import torchvision
    import transformers as tf
    from safetensors.torch import save_file

    torch.manual_seed(spec.seed)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES).eval()
    size = IMAGE_SIZE // 2  # ResNet-18 is not tiny: its images are
    processor = tf.ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    root.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(root / "processor")
    entries: Dict[str, Any] = {}
    for index, name in enumerate(("_pretrained_", *spec.tasks)):
        task_model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
        task_model.load_state_dict(model.state_dict())
        if name != "_pretrained_":
            train_images, train_labels = images[name]
            pixels = processor(images=train_images, return_tensors="pt")["pixel_values"]
            finetune(
                task_model,
                lambda m, x: m(x),
                pixels,
                torch.tensor(train_labels),
                steps=spec.finetune_steps,
                lr=spec.finetune_lr,
                seed=spec.seed + index,
                desc=f"fine-tune {name} (torchvision)",
            )
        path = root / f"{name.strip('_')}.safetensors"
        save_file({k: v.contiguous() for k, v in task_model.state_dict().items()}, str(path))
        entries[name] = {"model_name": "resnet18", "num_classes": NUM_CLASSES, "state_dict": str(path)}
    entries["_processor_"] = str(root / "processor")
    return entries


def _build(architecture: str, spec: TinyImageSuiteSpec, root: Path, images) -> Dict[str, Any]:
    if architecture == "torchvision":
        return _build_torchvision(spec, root, images)
    model, processor = tiny_classifier(architecture, spec.seed)
    pretrained = root / "pretrained"
    model.save_pretrained(pretrained)
    processor.save_pretrained(pretrained)
    paths = {"_pretrained_": str(pretrained)}
    model_class = type(model)
    for index, task in enumerate(spec.tasks):
        train_images, train_labels = images[task]
        pixels = processor(images=train_images, return_tensors="pt")["pixel_values"]
        finetuned = model_class.from_pretrained(pretrained)
        finetune(
            finetuned,
            lambda m, x: m(pixel_values=x).logits,
            pixels,
            torch.tensor(train_labels),
            steps=spec.finetune_steps,
            lr=spec.finetune_lr,
            seed=spec.seed + index,
            desc=f"fine-tune {task} ({architecture})",
        )
        finetuned.save_pretrained(root / task)
        processor.save_pretrained(root / task)
        paths[task] = str(root / task)
    return paths


def _write_configs(config: Path, architecture: str, paths: Dict[str, Any], data: Dict[str, Dict[str, Path]]) -> str:
    name = f"tiny-{architecture}_TA{len(data)}"
    processor = paths.pop("_processor_", None) or paths["_pretrained_"]
    datasets = {
        split: {t: {"_target_": "datasets.load_from_disk", "dataset_path": str(p[split])} for t, p in data.items()}
        for split in ("train", "test")
    }
    modelpool = {
        "_target_": POOL_TARGETS[architecture],
        "_recursive_": False,
        "models": paths,
        "train_datasets": datasets["train"],
        "test_datasets": datasets["test"],
    }
    if architecture == "resnet":
        modelpool["type"] = "transformers"
    if architecture == "torchvision":
        modelpool["processor"] = processor
    taskpool = {
        "_target_": TASKPOOL_TARGET,
        "_recursive_": False,
        "test_datasets": datasets["test"],
        "processor": processor,
        "dataloader_kwargs": {"batch_size": 64, "num_workers": 0},
    }
    for group, content in (("modelpool", modelpool), ("taskpool", taskpool)):
        (config / group).mkdir(parents=True, exist_ok=True)
        (config / group / f"{name}.yaml").write_text(
            f"# Tiny {architecture} suite built by fusion_bench_tinting.testing.tiny_image_classifiers\n"
            + OmegaConf.to_yaml(OmegaConf.create(content))
        )
    write_suite_config(config, name)
    return name


def build_tiny_image_suites(out, spec: TinyImageSuiteSpec = TinyImageSuiteSpec()) -> List[str]:
    """Build (or reuse, when ``out`` holds a build of the same spec) the tiny image-classifier suites."""
    out = Path(out).resolve()
    reused = reused_build(out, spec)
    if reused is not None:
        return reused
    images, data = write_synthetic_tasks(out, spec.tasks, spec.train_size, spec.test_size, spec.seed)
    train_images = {task: splits["train"] for task, splits in images.items()}
    suites = [
        _write_configs(out / "config", architecture, _build(architecture, spec, out / architecture, train_images), data)
        for architecture in spec.architectures
    ]
    return stamp_build(out, spec, suites)
