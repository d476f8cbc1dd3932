"""What a task's inputs and teacher outputs come from: a JSON-able description of the configs and local files
they are read from (a family's ``cache_identity``), and the versions of the libraries a report was made with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf


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


def library_versions() -> Dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "fusion-bench", "fusion-bench-tinting", "open_clip_torch", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions
