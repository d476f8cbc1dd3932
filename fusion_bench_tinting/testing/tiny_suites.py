"""Tiny CLIP suites built locally, with the real model classes and FusionBench's real pools.

No model hub is needed: a tiny ``transformers`` CLIP (with a byte-level tokenizer so FusionBench can
build zero-shot heads from its class-name templates) and a tiny ``open_clip`` ViT are created from
scratch, then one copy per task is *really fine-tuned* on a learnable synthetic image task, so that
merging them loses accuracy and adaptation has something to recover. Each suite is written as
a folder with the models, the datasets (``datasets.save_to_disk``) and Hydra configs
(``config/modelpool/<suite>.yaml`` and ``config/taskpool/<suite>.yaml``) usable with
``fusion_bench --config-dir <folder>/config``.

Task names are real FusionBench task names with 10 classes, so the class-name registry applies.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..suites import write_suite_config

TASKS = ("eurosat", "stl10", "fashion_mnist", "cifar10")
NUM_CLASSES = 10
IMAGE_SIZE = 32


@dataclass
class TinySuiteSpec:
    tasks: Tuple[str, ...] = TASKS
    train_size: int = 320
    test_size: int = 128
    finetune_steps: int = 200
    finetune_lr: float = 2e-3
    seed: int = 0
    families: Tuple[str, ...] = ("hf_clip", "open_clip")
    version: int = 1

    @property
    def suffix(self) -> str:
        return f"TA{len(self.tasks)}"


# ----- synthetic tasks -------------------------------------------------------------------------
def _draw(task_index: int, label: int, rng: np.random.Generator) -> np.ndarray:
    """One 32x32 RGB image whose class is visible through a task-specific cue."""
    image = rng.normal(0.45, 0.12, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    kind = task_index % 4
    if kind == 0:  # a class-specific grey level
        image = 0.5 * (image - 0.45) + 0.05 + 0.095 * label + rng.normal(0, 0.01)
    elif kind == 1:  # a class-specific colour in the top-left quadrant only
        hue = label / NUM_CLASSES * 2 * np.pi
        image[:16, :16, :] += 0.4 * np.array([np.cos(hue), np.cos(hue + 2.1), np.cos(hue + 4.2)])
    elif kind == 2:  # a class-specific colour over the whole image
        hue = label / NUM_CLASSES * 2 * np.pi
        image += 0.35 * np.array([np.cos(hue), np.cos(hue + 2.1), np.cos(hue + 4.2)])[None, None, :]
    else:  # a vertical bar at a class-specific column, in the green channel
        x = 1 + label * 3
        image[:, x : x + 2, 1] += 0.6
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def synthetic_split(task_index: int, size: int, seed: int) -> Tuple[List[Image.Image], List[int]]:
    rng = np.random.default_rng(seed)
    labels = [int(x) for x in rng.integers(0, NUM_CLASSES, size=size)]
    images = [Image.fromarray(_draw(task_index, y, rng)) for y in labels]
    return images, labels


def save_image_dataset(images: Sequence[Image.Image], labels: Sequence[int], path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=NUM_CLASSES)})
    Dataset.from_dict({"image": list(images), "label": list(labels)}, features=features).save_to_disk(str(path))


# ----- fine-tuning -----------------------------------------------------------------------------
def finetune(
    encoder: nn.Module,
    logits_fn: Callable[[nn.Module, Tensor], Tensor],
    inputs: Tensor,
    labels: Tensor,
    *,
    steps: int,
    lr: float,
    seed: int,
    desc: str,
) -> nn.Module:
    """Train the encoder (head frozen, as in Task Arithmetic) with cross-entropy on labelled data."""
    generator = torch.Generator().manual_seed(seed)
    encoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=0.0)
    for _ in tqdm(range(steps), desc=desc, leave=False):
        batch = torch.randint(0, inputs.shape[0], (32,), generator=generator)
        loss = F.cross_entropy(logits_fn(encoder, inputs[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return encoder.eval().requires_grad_(False)


# ----- transformers CLIP -----------------------------------------------------------------------
def byte_level_chars() -> List[str]:
    """The 256 characters byte-level BPE tokenizers (GPT-2, RoBERTa, CLIP) use for the 256 bytes."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def byte_level_vocab() -> Dict[str, int]:
    chars = byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def tiny_hf_clip(seed: int, max_positions: int = 77):
    """A tiny CLIP with a byte-level tokenizer (one token per character: long class names need ``max_positions``)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    special = dict(
        eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"], pad_token_id=vocab["<|endoftext|>"]
    )
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=max_positions,
            **special,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), processor


def _build_hf_clip(spec: TinySuiteSpec, root: Path, data: Dict[str, Dict[str, Path]], images) -> Dict[str, str]:
    from fusion_bench.models.hf_clip import HFCLIPClassifier
    from fusion_bench.tasks.clip_classification import get_classnames_and_templates
    from transformers import CLIPVisionModel

    clip, processor = tiny_hf_clip(spec.seed)
    pretrained_dir = root / "pretrained"
    clip.save_pretrained(pretrained_dir)
    processor.save_pretrained(pretrained_dir)
    classifier = HFCLIPClassifier(clip, processor)
    scale = clip.logit_scale.exp().item()
    projection = clip.visual_projection
    paths = {"_pretrained_": str(pretrained_dir)}
    for index, task in enumerate(spec.tasks):
        classifier.set_classification_task(*get_classnames_and_templates(task))
        text = classifier.zeroshot_weights.detach().clone()
        train_images, train_labels = images[task]["train"]
        pixels = processor(images=train_images, return_tensors="pt")["pixel_values"]

        def logits_fn(encoder, x, text=text):
            emb = projection(encoder(x)[1])
            return scale * (emb / emb.norm(dim=-1, keepdim=True)) @ text.T

        encoder = CLIPVisionModel.from_pretrained(pretrained_dir)
        finetune(
            encoder,
            logits_fn,
            pixels,
            torch.tensor(train_labels),
            steps=spec.finetune_steps,
            lr=spec.finetune_lr,
            seed=spec.seed + index,
            desc=f"fine-tune {task}",
        )
        encoder.save_pretrained(root / task)
        paths[task] = str(root / task)
    return paths


# ----- open_clip -------------------------------------------------------------------------------
OPEN_CLIP_TINY = "tiny-fbt-vit"


def tiny_open_clip_encoder(seed: int, config_dir: Path):
    """A FusionBench ``ImageEncoder`` around a tiny open_clip ViT (built without downloading)."""
    import open_clip
    from fusion_bench.models.open_clip import ImageEncoder

    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": IMAGE_SIZE,
            "layers": 2,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
    }
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{OPEN_CLIP_TINY}.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(config_dir / f"{OPEN_CLIP_TINY}.json"))
    torch.manual_seed(seed)
    model, train_preprocess, val_preprocess = open_clip.create_model_and_transforms(OPEN_CLIP_TINY, pretrained=None)
    encoder = ImageEncoder.__new__(ImageEncoder)  # its __init__ downloads OpenAI weights
    nn.Module.__init__(encoder)
    encoder.model, encoder.train_preprocess, encoder.val_preprocess = model, train_preprocess, val_preprocess
    encoder.cache_dir = None
    del encoder.model.transformer  # as ImageEncoder(keep_lang=False)
    return encoder.eval()


def _build_open_clip(spec: TinySuiteSpec, root: Path, images) -> Tuple[Dict[str, str], Dict[str, str]]:
    import copy

    from fusion_bench.models.open_clip import ClassificationHead

    root.mkdir(parents=True, exist_ok=True)
    pretrained = tiny_open_clip_encoder(spec.seed, root / "model_configs")
    torch.save(pretrained, root / "zeroshot.pt")
    models, heads = {"_pretrained_": str(root / "zeroshot.pt")}, {}
    generator = torch.Generator().manual_seed(spec.seed)
    scale = pretrained.model.logit_scale.exp().item()  # heads are logit_scale.exp() * text embeddings
    for index, task in enumerate(spec.tasks):
        text = F.normalize(torch.randn(NUM_CLASSES, 16, generator=generator), dim=-1)
        head = ClassificationHead(normalize=True, weights=scale * text)
        torch.save(head, root / f"head_{task}.pt")
        heads[task] = str(root / f"head_{task}.pt")
        train_images, train_labels = images[task]["train"]
        pixels = torch.stack([pretrained.val_preprocess(im) for im in train_images])
        encoder = finetune(
            copy.deepcopy(pretrained),
            lambda enc, x, head=head: head(enc(x)),
            pixels,
            torch.tensor(train_labels),
            steps=spec.finetune_steps,
            lr=spec.finetune_lr,
            seed=spec.seed + index,
            desc=f"fine-tune {task} (open_clip)",
        )
        torch.save(encoder, root / f"{task}.pt")
        models[task] = str(root / f"{task}.pt")
    return models, heads


# ----- configs ---------------------------------------------------------------------------------
def _yaml(data) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))


def _dataset_configs(data: Dict[str, Dict[str, Path]], split: str) -> Dict[str, dict]:
    return {t: {"_target_": "datasets.load_from_disk", "dataset_path": str(p[split])} for t, p in data.items()}


_LOADER = {"batch_size": 64, "num_workers": 0, "pin_memory": False, "drop_last": False, "shuffle": False}


def write_configs(out: Path, spec: TinySuiteSpec, data, hf_paths, open_clip_paths, prefix: str = "tiny") -> List[str]:
    """Model pool and task pool configs (``<out>/config``) for the HF CLIP and/or open_clip models given."""
    config = out / "config"
    for group in ("modelpool", "taskpool"):
        (config / group).mkdir(parents=True, exist_ok=True)
    suites = []
    if hf_paths:
        suites.append(_write_hf_clip_suite(config, f"{prefix}-clip_{spec.suffix}", data, hf_paths))
    if open_clip_paths:
        suites.append(_write_open_clip_suite(config, f"{prefix}-openclip_{spec.suffix}", data, *open_clip_paths))
    return suites


def _write_hf_clip_suite(config: Path, name: str, data, hf_paths) -> str:
    (config / "modelpool" / f"{name}.yaml").write_text(
        "# Tiny transformers CLIP suite built by fusion_bench_tinting.testing.tiny_suites\n"
        + _yaml(
            {
                "_target_": "fusion_bench.modelpool.CLIPVisionModelPool",
                "_recursive_": False,
                "processor": hf_paths["_pretrained_"],
                "platform": "hf",
                "models": hf_paths,
                "train_datasets": _dataset_configs(data, "train"),
                "test_datasets": _dataset_configs(data, "test"),
            }
        )
    )
    (config / "taskpool" / f"{name}.yaml").write_text(
        "defaults:\n  - CLIPVisionModelTaskPool@: _template\n  - _self_\n"
        + _yaml(
            {
                "_target_": "fusion_bench_tinting.evaluation.taskpool.TaskAwareCLIPVisionModelTaskPool",
                "base_model": hf_paths["_pretrained_"],
                "test_datasets": _dataset_configs(data, "test"),
                "dataloader_kwargs": _LOADER,
            }
        )
    )
    write_suite_config(config, name)
    return name


def _write_open_clip_suite(config: Path, name: str, data, models, heads) -> str:
    (config / "modelpool" / f"{name}.yaml").write_text(
        "# Tiny open_clip suite (task_vectors checkpoint format) built by "
        "fusion_bench_tinting.testing.tiny_suites\n"
        + _yaml(
            {
                "_target_": "fusion_bench.modelpool.OpenCLIPVisionModelPool",
                "_recursive_": False,
                "models": models,
                "classification_heads": heads,
                "train_datasets": _dataset_configs(data, "train"),
                "test_datasets": _dataset_configs(data, "test"),
            }
        )
    )
    (config / "taskpool" / f"{name}.yaml").write_text(
        _yaml(
            {
                "_target_": "fusion_bench_tinting.families.open_clip_taskpool.TaskAwareOpenCLIPVisionModelTaskPool",
                "_recursive_": False,
                "classification_heads": heads,
                "test_datasets": _dataset_configs(data, "test"),
                "dataloader_kwargs": _LOADER,
            }
        )
    )
    write_suite_config(config, name)
    return name


#: the class paths a build's configs name; a build of another layout is made again (its targets are gone)
CONFIG_LAYOUT = 2


def reused_build(out: Path, spec: Any) -> Optional[List[str]]:
    """The suite names of a build of the same ``spec`` and config layout in ``out``, or None after emptying ``out``
    for a new one."""
    stamp = out / "suite.json"
    built = json.loads(stamp.read_text()) if stamp.exists() else {}
    if built.get("spec") == json.loads(json.dumps(asdict(spec))) and built.get("layout") == CONFIG_LAYOUT:
        return built["suites"]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return None


def stamp_build(out: Path, spec: Any, suites: List[str]) -> List[str]:
    stamp = {"spec": asdict(spec), "layout": CONFIG_LAYOUT, "suites": suites}
    (out / "suite.json").write_text(json.dumps(stamp, indent=2))
    return suites


def write_synthetic_tasks(out: Path, tasks: Sequence[str], train_size: int, test_size: int, seed: int):
    """Each task's train and test splits (``<out>/data/<task>/<split>``): the images by task and split, and the
    paths."""
    images, data = {}, {}
    for index, task in enumerate(tasks):
        train = synthetic_split(index, train_size, seed=seed * 1000 + 2 * index)
        test = synthetic_split(index, test_size, seed=seed * 1000 + 2 * index + 1)
        images[task] = {"train": train, "test": test}
        data[task] = {"train": out / "data" / task / "train", "test": out / "data" / task / "test"}
        save_image_dataset(*train, data[task]["train"])
        save_image_dataset(*test, data[task]["test"])
    return images, data


def build_tiny_suites(out: os.PathLike, spec: TinySuiteSpec = TinySuiteSpec()) -> List[str]:
    """Build (or reuse, when ``out`` holds a build of the same spec) the tiny suites; returns their names."""
    out = Path(out).resolve()
    reused = reused_build(out, spec)
    if reused is not None:
        return reused
    images, data = write_synthetic_tasks(out, spec.tasks, spec.train_size, spec.test_size, spec.seed)
    hf_paths = _build_hf_clip(spec, out / "hf_clip", data, images) if "hf_clip" in spec.families else None
    open_clip_paths = _build_open_clip(spec, out / "open_clip", images) if "open_clip" in spec.families else None
    return stamp_build(out, spec, write_configs(out, spec, data, hf_paths, open_clip_paths))
