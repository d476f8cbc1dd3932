"""A local Hugging Face cache with tiny stand-ins under the real ids of FusionBench's CLIP suites.

With ``HF_HOME`` pointing at the folder this module fills and ``HF_HUB_OFFLINE=1``, the user's command
``fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8`` runs exactly as typed, with
FusionBench's own model and dataset configs, on a machine that cannot reach the hub:

- models, in the hub cache layout (``hub/models--<org>--<name>/snapshots/<revision>`` and ``refs/main``),
  under the ids FusionBench's ``model/clip-vit/<model>_<task>.yaml`` configs name: a tiny CLIP
  (transformers classes, byte-level tokenizer) as the pretrained model, and per task a copy of its
  vision tower moved by a seeded random task vector (stand-ins: not trained, the command only has to run);
- datasets, in the ``datasets`` cache layout that ``load_dataset(<id>[, <config>], split=...)`` reads back
  offline (``datasets/<org>___<name>/<config>/0.0.0/<hash>``), under the ids, configs and splits that
  FusionBench's ``dataset/image_classification/{train,test}/<task>.yaml`` configs name, with the real
  datasets' column names (``image``/``label``; PCam's boolean label; FER2013's web-dataset columns) and
  a label per class of the task's class names in FusionBench's CLIP registry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf

from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

REVISION = "0" * 40  # the snapshot folder of every model (any commit-like name works offline)
DATASET_HASH = "fusionbenchtintingfixture"
#: text positions of the tiny CLIP: its byte-level tokenizer spends a token per character of "a photo of a <class>."
TEXT_POSITIONS = 256


def suite_models(model_config: str) -> Dict[str, str]:
    """task -> hub id (``_pretrained_`` included) of FusionBench's ``model/clip-vit/<model_config>.yaml``."""
    folder = fusion_bench_config_dir() / "model" / "clip-vit"
    config = OmegaConf.to_container(OmegaConf.load(folder / f"{model_config}.yaml"))
    models: Dict[str, str] = {}
    for name in config.get("defaults", []):
        models.update(OmegaConf.to_container(OmegaConf.load(folder / f"{name}.yaml")))
    models.update({k: v for k, v in config.items() if k != "defaults"})
    return models


def dataset_spec(task: str, split_kind: str) -> Dict[str, Any]:
    """FusionBench's ``dataset/image_classification/<split_kind>/<task>.yaml`` entry of ``task``."""
    path = fusion_bench_config_dir() / "dataset" / "image_classification" / split_kind / f"{task}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path))[task]


def dataset_location(spec: Dict[str, Any]) -> Tuple[str, str, str, str]:
    """(hub id, config name, split, layout) that ``spec`` loads; layout: ``image``, ``pcam`` or ``fer2013``."""
    if spec["_target_"].endswith("load_fer2013"):
        return "clip-benchmark/wds_fer2013", "default", spec["split"], "fer2013"
    args = list(spec.get("_args_", []))
    repo = spec.get("path", args[0] if args else None)
    config = args[1] if len(args) > 1 else spec.get("name", "default")
    return repo, config, spec["split"], "pcam" if repo == "1aurent/PatchCamelyon" else "image"


# ----- models ----------------------------------------------------------------------------------
def _snapshot(hf_home: Path, repo_id: str) -> Path:
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return repo / "snapshots" / REVISION


def write_models(hf_home: Path, models: Dict[str, str], seed: int = 0, task_vector_scale: float = 0.02) -> None:
    from transformers import CLIPVisionModel

    from .tiny_suites import tiny_hf_clip

    clip, processor = tiny_hf_clip(seed, max_positions=TEXT_POSITIONS)
    pretrained = _snapshot(hf_home, models["_pretrained_"])
    clip.save_pretrained(pretrained)
    processor.save_pretrained(pretrained)
    for index, (task, repo_id) in enumerate(sorted((t, r) for t, r in models.items() if t != "_pretrained_")):
        encoder = CLIPVisionModel.from_pretrained(pretrained)
        generator = torch.Generator().manual_seed(seed * 1000 + index + 1)
        with torch.no_grad():
            for parameter in encoder.parameters():
                parameter.add_(task_vector_scale * torch.randn(parameter.shape, generator=generator))
        encoder.save_pretrained(_snapshot(hf_home, repo_id))


# ----- datasets --------------------------------------------------------------------------------
def _images(count: int, rng: np.random.Generator) -> List[Any]:
    from PIL import Image

    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]


def _table(layout: str, num_classes: int, count: int, rng: np.random.Generator):
    """(columns, features) of ``count`` samples in the real dataset's column layout."""
    from datasets import ClassLabel, Features, Image, Value

    images, labels = _images(count, rng), [int(x) for x in rng.integers(0, num_classes, count)]
    if layout == "fer2013":
        columns = {
            "__key__": [f"{i:06d}" for i in range(count)],
            "__url__": ["fixture.tar"] * count,
            "jpg": images,
            "cls": labels,
        }
        return columns, Features(
            {"__key__": Value("string"), "__url__": Value("string"), "jpg": Image(), "cls": Value("int64")}
        )
    if layout == "pcam":
        return {"image": images, "label": [bool(x % 2) for x in labels]}, Features(
            {"image": Image(), "label": Value("bool")}
        )
    return {"image": images, "label": labels}, Features(
        {"image": Image(), "label": ClassLabel(num_classes=num_classes)}
    )


def write_dataset(hf_home: Path, repo_id: str, config: str, splits: Dict[str, Dict[str, Any]], features) -> Path:
    """One ``datasets`` cache entry holding ``splits`` (name -> columns), as ``load_dataset`` prepares it."""
    from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo
    from datasets.arrow_writer import ArrowWriter
    from datasets.naming import camelcase_to_snakecase, filenames_for_dataset_split

    namespace, _, name = repo_id.rpartition("/")
    folder_name = "___".join([p for p in (namespace, camelcase_to_snakecase(name)) if p])
    folder = hf_home / "datasets" / folder_name / config / "0.0.0" / DATASET_HASH
    folder.mkdir(parents=True, exist_ok=True)
    split_dict = SplitDict(dataset_name=name)
    for split, columns in splits.items():
        table = Dataset.from_dict(columns, features=features).data.table
        (path,) = filenames_for_dataset_split(str(folder), name, split, filetype_suffix="arrow")
        with ArrowWriter(path=path, features=features) as writer:
            writer.write_table(table)
            writer.finalize()
        split_dict.add(SplitInfo(name=split, num_examples=table.num_rows, dataset_name=name))
    DatasetInfo(features=features, config_name=config, dataset_name=name, splits=split_dict).write_to_directory(
        str(folder)
    )
    return folder


def write_datasets(hf_home: Path, tasks: Sequence[str], samples: int = 16, seed: int = 0) -> None:
    """Every split of every task's FusionBench train and test dataset configs, grouped per hub id."""
    from fusion_bench.tasks.clip_classification import get_classnames_and_templates

    entries: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    for task in tasks:
        num_classes = len(get_classnames_and_templates(task)[0])
        for split_kind in ("train", "test"):
            repo, config, split, layout = dataset_location(dataset_spec(task, split_kind))
            entries.setdefault((repo, config, layout), {"num_classes": num_classes, "splits": set()})["splits"].add(
                split
            )
    for (repo, config, layout), entry in sorted(entries.items()):
        rng = np.random.default_rng(int(hashlib.sha256(f"{seed}:{repo}".encode()).hexdigest()[:8], 16))
        splits, features = {}, None
        for split in sorted(entry["splits"]):
            splits[split], features = _table(layout, entry["num_classes"], samples, rng)
        write_dataset(hf_home, repo, config, splits, features)


def fill_hub_cache(
    hf_home: Path, model_config: str = "clip-vit-base-patch32_TALL20", samples: int = 16, seed: int = 0
) -> List[str]:
    """Fill ``hf_home`` for every task of FusionBench's ``model/clip-vit/<model_config>`` (the 20-task list
    covers the 8- and 14-task suites); returns the task names."""
    models = suite_models(model_config)
    tasks = sorted(t for t in models if t != "_pretrained_")
    write_models(Path(hf_home), models, seed=seed)
    write_datasets(Path(hf_home), tasks, samples=samples, seed=seed)
    return tasks
