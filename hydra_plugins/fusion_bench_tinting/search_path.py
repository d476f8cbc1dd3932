"""Hydra search-path plugin that makes ``fusion_bench method=model_tinting ...`` find our configs.

FusionBench has no plugin registry; Hydra discovers this module through the ``hydra_plugins``
namespace package. For FusionBench launches it appends, at the lowest priority:

- this package's configs (method, suite aliases, task pools): the repository's top-level ``config/``
  folder, shipped inside the package as ``fusion_bench_tinting/config``;
- FusionBench's own config folder. FusionBench's CLI takes ``./config`` of the current directory as
  its primary config folder when one exists (our repository root has one), and would then fail with
  ``Cannot find primary config 'fabric_model_fusion'``. With FusionBench's folder on the search path the
  primary config and all of FusionBench's groups resolve from any directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from fusion_bench_tinting.compat import ensure_typing_override

# Applied at plugin discovery, i.e. before any FusionBench model pool is imported (see compat.py).
ensure_typing_override()


def _package_dir(name: str) -> Optional[Path]:
    """Folder of an installed package, found without importing it."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None):
        # FusionBench replaces its module object by a lazy importer whose __spec__ is None.
        return Path(module.__file__).resolve().parent
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def tinting_config_dir() -> Path:
    package_dir = _package_dir("fusion_bench_tinting")
    assert package_dir is not None, "this plugin ships inside fusion-bench-tinting"
    return (package_dir / "config").resolve()


def fusion_bench_config_dir() -> Optional[Path]:
    package_dir = _package_dir("fusion_bench")
    if package_dir is None:
        return None
    config_dir = package_dir.parent / "fusion_bench_config"
    return config_dir if config_dir.is_dir() else None


def _as_dir(search_path_entry: str) -> Optional[Path]:
    """Folder named by a search-path entry (``file://DIR`` or a bare path); None for ``pkg://``."""
    if search_path_entry.startswith("file://"):
        return Path(search_path_entry[len("file://") :]).resolve()
    if "://" in search_path_entry:
        return None
    return Path(search_path_entry).resolve()


def _is_fusion_bench_launch(main_dir: Optional[Path], fusion_bench_dir: Path) -> bool:
    """True for the folders FusionBench's CLI may pick as its primary config folder."""
    if main_dir is None:
        return False
    cwd = Path(os.getcwd()).resolve()
    candidates = {fusion_bench_dir.resolve(), cwd / "config", cwd / "fusion_bench_config"}
    return main_dir in candidates


class FusionBenchTintingSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        fusion_bench_dir = fusion_bench_config_dir()
        if fusion_bench_dir is None:
            return
        entries = search_path.get_path()
        main_dirs = [_as_dir(e.path) for e in entries if e.provider == "main"]
        if not main_dirs or not _is_fusion_bench_launch(main_dirs[0], fusion_bench_dir):
            return
        from fusion_bench_tinting.program_console import install as install_compact_output

        install_compact_output(sys.argv)
        known_dirs = {_as_dir(e.path) for e in entries}
        for provider, config_dir in (
            ("fusion-bench-tinting", tinting_config_dir()),
            ("fusion-bench", fusion_bench_dir.resolve()),
        ):
            if config_dir not in known_dirs:
                search_path.append(provider=provider, path=f"file://{config_dir}")
