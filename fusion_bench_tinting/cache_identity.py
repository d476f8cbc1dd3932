"""What a task's cached inputs and teacher outputs depend on (:mod:`.caching`'s key): a JSON-able description of
the configs they are read from, with the size and modification time of every local file those name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from .core.families import PRETRAINED, ModelFamily


def _local_files(value: str) -> Optional[list]:
    path = Path(os.path.expanduser(value))
    if not value or len(value) > 4096 or not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def describe_source(config: Any) -> Any:
    """A JSON-able description of a config, with the stats of every local file or folder it names."""
    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return {str(k): describe_source(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [describe_source(v) for v in config]
    if isinstance(config, str):
        files = _local_files(config)
        return config if files is None else {"path": config, "files": files}
    if config is None or isinstance(config, (int, float, bool)):
        return config
    return repr(config)


def cache_identity(family: ModelFamily, task: str) -> Dict[str, Any]:
    """The family's own ``cache_identity(task)`` when it has one (a pool that does not hold its data's config,
    e.g. NYUv2's), else the configs of the task's model, the pretrained model, the adaptation dataset and the
    pool's processor, tokenizer or heads."""
    if hasattr(family, "cache_identity"):
        return family.cache_identity(task)
    pool = family.modelpool
    identity = {
        "family": type(family).__name__,
        "task": task,
        "model": describe_source(pool._models[task]),
        "pretrained": describe_source(pool._models[PRETRAINED]) if PRETRAINED in pool._models else None,
        "dataset": describe_source(family.adaptation_configs()[task]),
    }
    for attribute in ("_processor", "_tokenizer", "_classification_heads"):
        value = getattr(pool, attribute, None)
        if isinstance(value, (dict, DictConfig)) and task in value:
            value = value[task]
        if value is not None:
            identity[attribute.strip("_")] = describe_source(value)
    return identity
