"""Tokenized text datasets for sequence classification suites (GLUE and local folders).

Datasets are tokenized once, truncated to ``max_length`` and *not* padded: padding happens per batch
(the adaptation cache cuts each batch to its longest sequence, the task pools pad with the tokenizer).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

from omegaconf import DictConfig

from ..core.errors import TintingConfigError

#: GLUE task -> (text columns, number of labels (1 = regression), validation split)
GLUE_TASKS: Dict[str, Tuple[Tuple[str, ...], int, str]] = {
    "cola": (("sentence",), 2, "validation"),
    "sst2": (("sentence",), 2, "validation"),
    "mrpc": (("sentence1", "sentence2"), 2, "validation"),
    "stsb": (("sentence1", "sentence2"), 1, "validation"),
    "qqp": (("question1", "question2"), 2, "validation"),
    "mnli": (("premise", "hypothesis"), 3, "validation_matched"),
    "qnli": (("question", "sentence"), 2, "validation"),
    "rte": (("sentence1", "sentence2"), 2, "validation"),
}


def check_glue_task(name: str) -> None:
    if name not in GLUE_TASKS:
        raise TintingConfigError(f"GLUE has no task {name!r}; the tasks are {sorted(GLUE_TASKS)}.")


def resolve_tokenizer(tokenizer):
    """A tokenizer from a path/hub id, a ``_target_`` config, or a tokenizer object."""
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer)
    if isinstance(tokenizer, (dict, DictConfig)):
        from fusion_bench.utils import instantiate

        return instantiate(tokenizer)
    return tokenizer


def tokenize_texts(dataset, tokenizer, text_columns: Sequence[str], max_length: int = 128):
    """Tokenize one or two text columns (truncated, unpadded); keep the label column."""
    tokenizer = resolve_tokenizer(tokenizer)
    columns = list(text_columns)

    def encode(batch):
        texts = [batch[c] for c in columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    keep = {"label"}
    return dataset.map(encode, batched=True, remove_columns=[c for c in dataset.column_names if c not in keep])


def load_glue(
    name: str,
    tokenizer: Union[str, DictConfig, object],
    split: Optional[str] = None,
    max_length: int = 128,
    path: str = "nyu-mll/glue",
):
    """A GLUE split, tokenized (default: the validation split, ``validation_matched`` for MNLI)."""
    check_glue_task(name)
    from datasets import load_dataset

    columns, _, validation = GLUE_TASKS[name]
    dataset = load_dataset(path, name, split=split or validation)
    return tokenize_texts(dataset, tokenizer, columns, max_length)
