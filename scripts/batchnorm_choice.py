#!/usr/bin/env python
"""What a merged ResNet backbone should normalise with: a measurement on the tiny ResNet suite.

Merges the fine-tuned backbones by Task Arithmetic (coefficient 0.3, the start of Model Tinting) and scores
every task with its own fine-tuned head, the BatchNorm running statistics of the merged backbone taken three
ways: the pretrained model's (what the family does today), merged like the weights (pretrained + 0.3 x the
sum of the fine-tuned models' differences), or recomputed on the unlabelled test inputs of all tasks. No
adaptation: it measures the start the adaptation gets.

    python scripts/batchnorm_choice.py --suite-dir .cache/tiny-image-suites > docs/batchnorm_choice.md
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

COEFFICIENT = 0.3


def _pool(suite_dir: str):
    from omegaconf import OmegaConf

    from fusion_bench.utils import instantiate

    return instantiate(OmegaConf.load(os.path.join(suite_dir, "config", "modelpool", "tiny-resnet_TA4.yaml")), _recursive_=False)


def _test_batch(pool, task: str, processor):
    from fusion_bench.dataset import ImageClassificationDataset

    dataset = ImageClassificationDataset(pool.load_test_dataset(task), processor)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


def _merge(pretrained: nn.Module, finetuned: List[nn.Module], buffers: bool) -> nn.Module:
    """Task Arithmetic over the parameters (and the floating-point buffers when ``buffers``)."""
    merged = copy.deepcopy(pretrained)
    state = merged.state_dict()
    for name, value in pretrained.state_dict().items():
        is_parameter = name in dict(pretrained.named_parameters())
        if not value.is_floating_point() or not (is_parameter or buffers):
            continue
        state[name] = value + COEFFICIENT * sum(m.state_dict()[name] - value for m in finetuned)
    merged.load_state_dict(state)
    return merged.eval()


@torch.no_grad()
def _recompute_statistics(backbone: nn.Module, inputs: List[torch.Tensor]) -> None:
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
    backbone.train()
    for batch in inputs:
        for chunk in batch.split(64):
            backbone(pixel_values=chunk)
    backbone.eval()


@torch.no_grad()
def _accuracies(backbone: nn.Module, models: Dict[str, nn.Module], data) -> Dict[str, float]:
    scores = {}
    for task, model in models.items():
        own, model.resnet = model.resnet, backbone  # the task's head on the merged backbone
        images, labels = data[task]
        scores[task] = (model.original_forward(pixel_values=images).logits.argmax(-1) == labels).float().mean().item()
        model.resnet = own
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite-dir", default=".cache/tiny-image-suites", help="built (or built here) by the tiny image builder")
    args = parser.parse_args()
    from fusion_bench_tinting.testing.tiny_image_classifiers import TinyImageSuiteSpec, build_tiny_image_suites

    torch.manual_seed(0)
    build_tiny_image_suites(args.suite_dir, TinyImageSuiteSpec(finetune_steps=150))  # the build the table was measured on
    pool = _pool(args.suite_dir)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(pool._models["_pretrained_"])
    tasks = list(pool.model_names)
    models = {task: pool.load_model(task).eval() for task in tasks}
    data = {task: _test_batch(pool, task, processor) for task in tasks}
    pretrained = pool.load_model("_pretrained_").eval().resnet
    backbones = [models[t].resnet for t in tasks]
    rows = {
        "individual fine-tuned": {t: _accuracies(models[t].resnet, {t: models[t]}, data)[t] for t in tasks},
        "pretrained statistics (current)": _accuracies(_merge(pretrained, backbones, buffers=False), models, data),
        "statistics merged like the weights": _accuracies(_merge(pretrained, backbones, buffers=True), models, data),
    }
    recomputed = _merge(pretrained, backbones, buffers=False)
    _recompute_statistics(recomputed, [data[t][0] for t in tasks])
    rows["statistics recomputed on the test inputs"] = _accuracies(recomputed, models, data)
    print(f"| BatchNorm statistics of the merged backbone (Task Arithmetic, {COEFFICIENT}) | " + " | ".join(tasks) + " | average |")
    print("|---|" + "---:|" * (len(tasks) + 1))
    for name, scores in rows.items():
        values = [100 * scores[t] for t in tasks]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {sum(values) / len(values):.1f} |")


if __name__ == "__main__":
    main()
