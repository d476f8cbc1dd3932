"""CLIP suites with the real vision architectures and random weights, for speed measurements only.

Accuracy means nothing here: the "fine-tuned" models are the pretrained one plus small noise. What is
real is what costs time: the ViT-B/32, B/16 or L/14 vision tower (the text tower is tiny, it only builds
the zero-shot heads once), the number of tasks and their FusionBench names and class counts, and test
sets of JPEG files of a realistic size that every method has to decode and preprocess.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .tiny_suites import TinySuiteSpec, byte_level_vocab, write_configs

#: vision towers as in openai/clip-vit-*; ``tiny`` is for CPU smoke runs
ARCHITECTURES: Dict[str, dict] = {
    "tiny": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    ),
    "ViT-B-32": dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        projection_dim=512,
    ),
    "ViT-B-16": dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
        projection_dim=512,
    ),
    "ViT-L-14": dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
    ),
}

#: FusionBench's TA20 tasks in its order (the first 8 are TA8, the first 14 TALL14)
TA20 = (
    "sun397",
    "stanford-cars",
    "resisc45",
    "eurosat",
    "svhn",
    "gtsrb",
    "mnist",
    "dtd",
    "oxford_flowers102",
    "pcam",
    "fer2013",
    "oxford-iiit-pet",
    "stl10",
    "cifar100",
    "cifar10",
    "food101",
    "fashion_mnist",
    "emnist_letters",
    "kmnist",
    "rendered-sst2",
)

#: sizes of the test splits of those datasets as commonly used for these suites (``images_per_task="real"``),
#: so that the whole job (preprocessing, teacher pass, evaluation) sees a realistic number of images
TEST_SET_SIZES: Dict[str, int] = {
    "sun397": 19850,
    "stanford-cars": 8041,
    "resisc45": 6300,
    "eurosat": 2700,
    "svhn": 26032,
    "gtsrb": 12630,
    "mnist": 10000,
    "dtd": 1880,
    "oxford_flowers102": 6149,
    "pcam": 32768,
    "fer2013": 3589,
    "oxford-iiit-pet": 3669,
    "stl10": 8000,
    "cifar100": 10000,
    "cifar10": 10000,
    "food101": 25250,
    "fashion_mnist": 10000,
    "emnist_letters": 20800,
    "kmnist": 10000,
    "rendered-sst2": 1821,
}


@dataclass
class SpeedSuiteSpec:
    architecture: str = "tiny"
    num_tasks: int = 8
    #: a count per task, or "real" for :data:`TEST_SET_SIZES`
    images_per_task: Union[int, str] = 256
    image_width: int = 320
    image_height: int = 240
    seed: int = 0
    version: int = 1

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r}: choose one of {sorted(ARCHITECTURES)}")
        if not 1 <= self.num_tasks <= len(TA20):
            raise ValueError(f"num_tasks={self.num_tasks}: between 1 and {len(TA20)}")
        if self.images_per_task != "real" and not (isinstance(self.images_per_task, int) and self.images_per_task > 0):
            raise ValueError(f"images_per_task={self.images_per_task!r}: a positive count or 'real'")

    def test_size(self, task: str) -> int:
        return TEST_SET_SIZES[task] if self.images_per_task == "real" else int(self.images_per_task)

    @property
    def total_images(self) -> int:
        return sum(self.test_size(task) for task in self.tasks)

    @property
    def tasks(self) -> List[str]:
        return list(TA20[: self.num_tasks])


def synthetic_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A smooth random colour image (coarse noise upsampled), JPEG-encoded like a photo."""
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _save_test_set(task: str, spec: SpeedSuiteSpec, path: Path, rng: np.random.Generator) -> None:
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from fusion_bench.tasks.clip_classification import get_classnames_and_templates

    classes = get_classnames_and_templates(task)[0]
    labels = rng.integers(0, len(classes), size=spec.test_size(task)).tolist()
    images = [{"bytes": synthetic_jpeg(rng, spec.image_width, spec.image_height), "path": None} for _ in labels]
    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=len(classes))})
    Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(str(path))


def _clip(spec: SpeedSuiteSpec):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vision = dict(ARCHITECTURES[spec.architecture])
    projection_dim = vision.pop("projection_dim")
    vocab = byte_level_vocab()
    special = dict(
        eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"], pad_token_id=vocab["<|endoftext|>"]
    )
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            **special,
        ),
        vision_config=vision,
        projection_dim=projection_dim,
    )
    size = vision["image_size"]
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[]),
    )
    torch.manual_seed(spec.seed)
    return CLIPModel(config).eval(), processor


def build_speed_suite(out, spec: SpeedSuiteSpec = SpeedSuiteSpec()) -> str:
    """Build (or reuse) the suite under ``out``; returns its name (``speed-clip_TA<K>``, configs in ``out/config``)."""
    from transformers import CLIPVisionModel

    out = Path(out).resolve()
    stamp = out / "suite.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == asdict(spec):
        return json.loads(stamp.read_text())["suite"]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    data = {}
    for task in tqdm(spec.tasks, desc="Synthetic JPEG test sets"):
        data[task] = {"train": out / "data" / task, "test": out / "data" / task}
        _save_test_set(task, spec, data[task]["test"], rng)
    clip, processor = _clip(spec)
    paths = {"_pretrained_": str(out / "models" / "pretrained")}
    clip.save_pretrained(paths["_pretrained_"])
    processor.save_pretrained(paths["_pretrained_"])
    vision = CLIPVisionModel.from_pretrained(paths["_pretrained_"])
    base = {k: v.clone() for k, v in vision.state_dict().items()}
    generator = torch.Generator().manual_seed(spec.seed)
    for task in tqdm(spec.tasks, desc="Perturbed copies"):
        with torch.no_grad():
            for name, value in vision.state_dict().items():
                if value.is_floating_point():
                    value.copy_(base[name] + 1e-3 * torch.randn(value.shape, generator=generator))
        paths[task] = str(out / "models" / task)
        vision.save_pretrained(paths[task])
    suite_spec = TinySuiteSpec(tasks=tuple(spec.tasks), families=("hf_clip",))
    (suite,) = write_configs(out, suite_spec, data, paths, None, prefix="speed")
    stamp.write_text(json.dumps({"spec": asdict(spec), "suite": suite}, indent=2))
    return suite
