#!/usr/bin/env python
"""What a merged BatchNorm backbone should normalise with: a measurement on an image-classifier suite.

Merges the fine-tuned backbones by Task Arithmetic (coefficient 0.3, the start of Model Tinting) and scores
every task with its own fine-tuned head, the BatchNorm running statistics of the merged backbone taken four
ways: the pretrained model's (what the image-classifier family does), merged like the weights (pretrained +
0.3 x the sum of the fine-tuned models' differences), recomputed on the unlabelled test inputs of all tasks
together, or recomputed per task on that task's own test inputs. No adaptation: it measures the start the
adaptation gets. Any pool the image-classifier family reads works (transformers ResNet, torchvision ResNet,
timm EfficientNet):

    python scripts/batchnorm_choice.py --tiny-resnet .cache/tiny-image-suites   # builds the tiny suite there
    python scripts/batchnorm_choice.py --modelpool fusion_bench_tinting/config/modelpool/lite0_images.yaml
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Dict, List, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

COEFFICIENT = 0.3
Data = Dict[str, Tuple[Tensor, Tensor]]  # task -> (preprocessed test images, labels)


def _pool(config_path: str):
    from fusion_bench.utils import instantiate
    from omegaconf import OmegaConf

    import fusion_bench_tinting  # noqa: F401  (registers the plugin's pools)

    return instantiate(OmegaConf.load(config_path), _recursive_=False)


def _merge(pretrained: nn.Module, finetuned: List[nn.Module], buffers: bool) -> nn.Module:
    """Task Arithmetic over the parameters (and the floating-point buffers when ``buffers``)."""
    merged = copy.deepcopy(pretrained)
    state = merged.state_dict()
    parameters = dict(pretrained.named_parameters())
    for name, value in pretrained.state_dict().items():
        if value.is_floating_point() and (name in parameters or buffers):
            state[name] = value + COEFFICIENT * sum(m.state_dict()[name] - value for m in finetuned)
    merged.load_state_dict(state)
    return merged.eval()


@torch.no_grad()
def _recompute_statistics(backbone: nn.Module, family, images: List[Tensor]) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm statistics are the average over ``images``."""
    backbone = copy.deepcopy(backbone)
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
    backbone.train()
    for batch in images:
        for chunk in batch.split(64):
            args, kwargs = family.encoder_arguments(chunk)
            backbone(*args, **kwargs)
    return backbone.eval()


@torch.no_grad()
def _accuracy(family, backbone: nn.Module, head: nn.Module, images: Tensor, labels: Tensor) -> float:
    correct = 0
    for chunk, truth in zip(images.split(128), labels.split(128)):
        args, kwargs = family.encoder_arguments(chunk)
        logits = head(family.features(backbone(*args, **kwargs), chunk))
        correct += int((logits.argmax(-1) == truth).sum())
    return correct / len(labels)


def _load(pool) -> Tuple[object, nn.Module, Dict[str, nn.Module], Dict[str, nn.Module], Data]:
    from fusion_bench_tinting.core.families import PRETRAINED
    from fusion_bench_tinting.core.input_checks import dataset_labels
    from fusion_bench_tinting.families.image_classifier import ImageClassifierFamily

    family = ImageClassifierFamily(pool, torch.device("cpu"))
    pretrained = family.load_encoder(PRETRAINED)
    backbones, heads, data = {}, {}, {}
    for task in pool.model_names:
        backbones[task] = family.load_encoder(task)
        heads[task] = family.load_head(task).eval()
        images = family.adaptation_inputs(task, batch_size=64, num_workers=0, dtype=torch.float32).tensor
        data[task] = (images, dataset_labels(family.adaptation_dataset(task)))
    return family, pretrained, backbones, heads, data


def measure(pool) -> Dict[str, Dict[str, float]]:
    """Accuracy per task (0-1) of each choice of statistics, and of the individual fine-tuned models."""
    family, pretrained, backbones, heads, data = _load(pool)
    tasks = list(backbones)

    def scores(backbone_of) -> Dict[str, float]:
        return {t: _accuracy(family, backbone_of(t), heads[t], *data[t]) for t in tasks}

    weights_only = _merge(pretrained, list(backbones.values()), buffers=False)
    like_weights = _merge(pretrained, list(backbones.values()), buffers=True)
    all_tasks = _recompute_statistics(weights_only, family, [data[t][0] for t in tasks])
    return {
        "individual fine-tuned": scores(lambda t: backbones[t]),
        "pretrained statistics (the family's choice)": scores(lambda t: weights_only),
        "statistics merged like the weights": scores(lambda t: like_weights),
        "statistics recomputed on the test inputs of all tasks": scores(lambda t: all_tasks),
        "statistics recomputed per task on its own test inputs": scores(
            lambda t: _recompute_statistics(weights_only, family, [data[t][0]])
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--modelpool", help="a model pool config the image-classifier family reads")
    source.add_argument(
        "--tiny-resnet", metavar="DIR", help="build (or reuse) the tiny image suites in DIR and use its ResNet pool"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    config = args.modelpool
    if args.tiny_resnet:
        from fusion_bench_tinting.testing.tiny_image_classifiers import TinyImageSuiteSpec, build_tiny_image_suites

        build_tiny_image_suites(args.tiny_resnet, TinyImageSuiteSpec(finetune_steps=150))  # the build measured
        config = os.path.join(args.tiny_resnet, "config", "modelpool", "tiny-resnet_TA4.yaml")
    rows = measure(_pool(config))
    tasks = list(next(iter(rows.values())))
    print(
        f"| BatchNorm statistics of the merged backbone (Task Arithmetic, {COEFFICIENT}) | "
        + " | ".join(tasks)
        + " | average |"
    )
    print("|---|" + "---:|" * (len(tasks) + 1))
    for name, scores in rows.items():
        values = [100 * scores[t] for t in tasks]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {sum(values) / len(values):.1f} |")


if __name__ == "__main__":
    main()
