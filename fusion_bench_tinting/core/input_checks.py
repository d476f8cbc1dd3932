"""The files and datasets a run reads, checked before any adaptation, a failure naming the task and the file
(a library's own error, e.g. ``incomplete metadata``, says neither; bad labels would fail only in evaluation)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from .errors import ReadError, TintingConfigError


def source_of(config: Any) -> str:
    """Where a model or dataset config reads from (its path or hub id), for messages."""
    if isinstance(config, str):
        return config
    if isinstance(config, (Mapping, DictConfig)):
        for key in ("pretrained_model_name_or_path", "dataset_path", "path", "data_files", "name"):
            if config.get(key) is not None:
                return str(config.get(key))
    return type(config).__name__


def _first_line(error: BaseException) -> str:
    """``Type: first line`` of an error; of a DataLoader worker's re-raised error, its original last line."""
    text = [line for line in str(error).strip().splitlines() if line.strip()]
    if text and "Original Traceback" in str(error):
        return text[-1].strip()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn a failure while reading ``what`` (e.g. "the model of task 'mnist' (path)") into one named error."""
    try:
        yield
    except TintingConfigError:
        raise
    except Exception as error:  # any library's reading error: the message adds which task and file
        raise ReadError(what, _first_line(error)) from error


def num_classes(head: nn.Module) -> int:
    """The number of outputs of a head: the output width of its last linear layer."""
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linear[-1].out_features if linear else 0


def check_not_empty(task: str, size: int, source: str) -> None:
    if size == 0:
        raise TintingConfigError(f"The test set of task {task!r} ({source}) is empty: there is nothing to adapt on.")


def dataset_labels(dataset: Any) -> Optional[Tensor]:
    """The labels of an image-classification test set without decoding its images: the ``label`` column
    of the Hugging Face dataset that FusionBench's ``ImageClassificationDataset`` wraps (None otherwise)."""
    raw = getattr(dataset, "dataset", dataset)
    if "label" not in (getattr(raw, "column_names", None) or []):
        return None
    return torch.as_tensor(raw["label"], dtype=torch.long)


def check_labels(task: str, labels: Optional[Tensor], classes: int, source: str) -> None:
    """Every label one of the head's classes (regression heads, or labels not readable cheaply: no check)."""
    if labels is None or classes <= 1 or labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise TintingConfigError(
            f"The test set of task {task!r} ({source}) has labels {low}..{high}, but the task's head has {classes} "
            f"classes (0..{classes - 1}): the model pool pairs this task with another task's data or head."
        )


def check_image_shape(task: str, shape: Sequence[int], expected: Sequence[int], source: str) -> None:
    """Preprocessed images of the (channels, height, width) the encoder's patch and position embeddings expect."""
    if tuple(shape) != tuple(expected):
        raise TintingConfigError(
            f"The preprocessed images of task {task!r} ({source}) have shape {tuple(shape)}, but the model expects "
            f"{tuple(expected)} (channels, height, width): the pool's processor does not match its models."
        )


def source_in_pool(modelpool: Any, name: str, kind: str = "model") -> str:
    """Where the pool reads model ``name`` (or, ``kind`` "test", "val" or "train", that dataset of task ``name``)
    from, for messages."""
    configs = getattr(modelpool, f"_{kind}_datasets" if kind in ("test", "val", "train") else "_models", None) or {}
    return source_of(configs.get(name)) if name in configs else "not configured"


def check_test_set(family: Any, task: str, head: nn.Module) -> None:
    """Before any adaptation: the task's test labels are classes of its head."""
    split = family.adaptation_split
    source = source_in_pool(family.modelpool, task, split)
    with reading(f"the {split} set of task {task!r} ({source})"):
        labels = family.adaptation_labels(task)
    check_labels(task, labels, num_classes(head), source)
