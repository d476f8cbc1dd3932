"""The versions of the libraries a report was made with."""

from __future__ import annotations

from typing import Dict


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
