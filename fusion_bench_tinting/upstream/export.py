"""Write the methods as a change to FusionBench's own source tree, ready for a pull request.

The tree written to ``DIR`` mirrors FusionBench's repository:

- ``fusion_bench/method/model_tinting/``: the package's core (``fusion_bench_tinting/core``: the methods,
  families, merging, adaptation, the task-aware pools), imports renamed;
- ``fusion_bench/method/lot_merging/``: LOT Merging (``fusion_bench_tinting/lot_merging``), its own method, whose
  closed form Model Tinting's ``init_from=lot`` starts from;
  the plugin layer (suite aliases, the one-line command-line exits, the comparison, the suite builders, the
  benchmarks, this exporter) stays out;
- ``fusion_bench/method/__init__.py``: FusionBench's own file with the methods in its lazy import table;
- ``fusion_bench/taskpool/clip_vision/taskpool.py``: FusionBench's CLIP task pool, whose
  ``on_task_evaluation_begin`` hook calls ``set_task`` on a model that has it and evaluates a model's
  ``task_head`` when it has one (the hook now runs after the zero-shot head is set, so that it can replace it);
- ``config/method/model_tinting/{model_tinting,model_tinting_plusplus}.yaml`` and
  ``config/method/lot_merging/lot_merging.yaml``, in FusionBench's layout (``method=model_tinting/model_tinting``);
- ``docs/algorithms/model_tinting.md``, in FusionBench's docs format;
- ``tests/test_model_tinting.py``: ``unittest`` tests in FusionBench's style, which run in its tree;
- ``CHANGES.diff``: the two FusionBench files above against the installed release, for review.

FusionBench's files are read from the installed release and edited at named anchors; a release whose
text differs stops the export with the file and the anchor that was not found.
"""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

PLUGIN = "fusion_bench_tinting"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_DIR.parent / "config" if (PACKAGE_DIR.parent / "config").is_dir() else PACKAGE_DIR / "config"
#: the plugin's folders that are methods, and their folder under ``fusion_bench/method``
EXPORTED_FOLDERS = {"core": "model_tinting", "lot_merging": "lot_merging"}
#: plugin name -> FusionBench name, for imports and config targets (longest first)
RENAMES = (
    (f"{PLUGIN}.core", "fusion_bench.method.model_tinting"),
    (f"{PLUGIN}.lot_merging", "fusion_bench.method.lot_merging"),
    (f"{PLUGIN}.LOTMergingAlgorithm", "fusion_bench.method.lot_merging.LOTMergingAlgorithm"),
    (f"{PLUGIN}.ModelTintingAlgorithm", "fusion_bench.method.model_tinting.ModelTintingAlgorithm"),
    (f"{PLUGIN}.ModelTintingPlusPlus", "fusion_bench.method.model_tinting.ModelTintingPlusPlus"),
)
#: method config -> its place in FusionBench's config tree
METHOD_CONFIGS = {
    "model_tinting.yaml": "method/model_tinting/model_tinting.yaml",
    "model_tinting_plusplus.yaml": "method/model_tinting/model_tinting_plusplus.yaml",
    "lot_merging.yaml": "method/lot_merging/lot_merging.yaml",
}
METHOD_CLASSES = {
    "model_tinting": ("ModelTintingAlgorithm", "ModelTintingPlusPlus"),
    "lot_merging": ("LOTMergingAlgorithm",),
}


class ExportError(RuntimeError):
    """FusionBench's installed source is not the text the export edits."""


# --------------------------------------------------------------------------------------------- edits
#: (anchor, replacement) pairs applied to FusionBench's CLIP task pool; each anchor must occur once
CLIP_TASKPOOL_EDITS: Sequence[Tuple[str, str]] = (
    (
        "    _is_setup = False\n",
        "    _is_setup = False\n"
        "    #: models with a part per task (``set_task``, ``task_head``: Model Tinting, EMR-Merging) are\n"
        "    #: evaluated with each task's own part\n"
        "    evaluates_per_task_models = True\n"
        "    _task_head: Optional[nn.Module] = None\n",
    ),
    (
        "            self.on_task_evaluation_begin(classifier, task_name)\n"
        "            classifier.set_classification_task(classnames, templates)\n",
        "            classifier.set_classification_task(classnames, templates)\n"
        "            # after the zero-shot head is built: the hook may switch in the task's own head\n"
        "            self.on_task_evaluation_begin(classifier, task_name)\n",
    ),
    (
        '            logits: Tensor = outputs["logits"]\n',
        '            logits: Tensor = outputs["logits"]\n'
        "            if self._task_head is not None:  # the task's own head on the normalised image embeddings\n"
        "                weight = next(self._task_head.parameters())\n"
        '                logits = self._task_head(outputs["image_embeds"].to(weight.device, weight.dtype))\n',
    ),
    (
        "        if self.layer_wise_feature_save_path is not None:\n"
        "            # setup hooks for saving layer-wise features\n",
        "        model = classifier.clip_model.vision_model\n"
        '        if callable(getattr(model, "set_task", None)):\n'
        "            model.set_task(task_name)\n"
        '        task_head = getattr(model, "task_head", None)\n'
        "        self._task_head = task_head(task_name) if callable(task_head) else None\n"
        "        if self.layer_wise_feature_save_path is not None:\n"
        "            # setup hooks for saving layer-wise features\n",
    ),
    (
        '        Called at the end of task evaluation to save features and remove hooks.\n        """\n',
        "        Called at the end of task evaluation to save features and remove hooks.\n"
        '        """\n'
        "        self._task_head = None\n",
    ),
)


def method_init_edits() -> Sequence[Tuple[str, str]]:
    """FusionBench's lazy import table and its TYPE_CHECKING imports, with our methods added."""
    table = "".join(
        f"    {module!r}: [{', '.join(repr(name) for name in names)}],\n" for module, names in METHOD_CLASSES.items()
    ).replace("'", '"')
    imports = "".join(f"    from .{module} import {', '.join(names)}\n" for module, names in METHOD_CLASSES.items())
    return (
        ("_import_structure = {\n", "_import_structure = {\n" + table),
        ("if TYPE_CHECKING:\n", "if TYPE_CHECKING:\n" + imports),
    )


def apply_edits(text: str, edits: Sequence[Tuple[str, str]], where: str) -> str:
    for anchor, replacement in edits:
        count = text.count(anchor)
        if count != 1:
            raise ExportError(
                f"{where}: expected the text {anchor.strip()!r} once, found it {count} times; this FusionBench "
                "release differs from the one the export was written for (fusion-bench==0.2.33)."
            )
        text = text.replace(anchor, replacement)
    return text


def rename_imports(source: str) -> str:
    """``fusion_bench_tinting.core.x`` -> ``fusion_bench.method.model_tinting.x``, LOT Merging's likewise, and
    LOT Merging's relative imports of the core (strings such as the weights file's format tag are left alone)."""
    for plugin_name, upstream_name in RENAMES:
        source = re.sub(rf"\b{re.escape(plugin_name)}\b", upstream_name, source)
    return re.sub(r"from \.\.core\b", "from ..model_tinting", source)


# --------------------------------------------------------------------------------------------- writers
def fusion_bench_root() -> Path:
    """The installed ``fusion_bench`` package folder (found as the Hydra plugin finds it)."""
    from hydra_plugins.fusion_bench_tinting.search_path import _package_dir

    root = _package_dir("fusion_bench")
    if root is None:
        raise ExportError("FusionBench is not installed: the export edits its installed source.")
    return root


def method_sources() -> Dict[str, str]:
    """The exported modules, path relative to ``fusion_bench/method`` -> source with renamed imports."""
    sources = {}
    for folder, upstream_folder in EXPORTED_FOLDERS.items():
        for path in sorted((PACKAGE_DIR / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                relative = path.relative_to(PACKAGE_DIR / folder).as_posix()
                sources[f"{upstream_folder}/{relative}"] = rename_imports(path.read_text())
    return sources


def method_configs() -> Dict[str, str]:
    configs = {}
    from ..method_configs import core_rendered

    for name, target in METHOD_CONFIGS.items():
        source = core_rendered() if name == "model_tinting.yaml" else (CONFIG_DIR / "method" / name).read_text()
        text = rename_imports(source)
        text = text.replace("method=model_tinting_plusplus ", "method=model_tinting/model_tinting_plusplus ")
        text = text.replace("method=model_tinting ", "method=model_tinting/model_tinting ")
        text = text.replace("method=lot_merging ", "method=lot_merging/lot_merging ")
        configs[target] = text
    return configs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def export(out: Path) -> List[Path]:
    """Write the source tree described in the module docstring to ``out``; return the files written."""
    out = Path(out)
    written: Dict[Path, str] = {}
    for relative, source in method_sources().items():
        written[out / "fusion_bench" / "method" / relative] = source
    for relative, text in method_configs().items():
        written[out / "config" / relative] = text
    written[out / "docs" / "algorithms" / "model_tinting.md"] = (Path(__file__).parent / "model_tinting.md").read_text()
    written[out / "tests" / "test_model_tinting.py"] = (Path(__file__).parent / "test_model_tinting.py").read_text()
    root = fusion_bench_root()
    diffs = []
    for relative, edits in (
        ("method/__init__.py", method_init_edits()),
        ("taskpool/clip_vision/taskpool.py", CLIP_TASKPOOL_EDITS),
    ):
        original = (root / relative).read_text()
        edited = apply_edits(original, edits, f"fusion_bench/{relative}")
        written[out / "fusion_bench" / relative] = edited
        diffs.append(
            "".join(
                difflib.unified_diff(
                    original.splitlines(keepends=True),
                    edited.splitlines(keepends=True),
                    f"a/fusion_bench/{relative}",
                    f"b/fusion_bench/{relative}",
                )
            )
        )
    written[out / "CHANGES.diff"] = "".join(diffs)
    for upstream_folder in EXPORTED_FOLDERS.values():
        if (out / "fusion_bench" / "method" / upstream_folder).exists():
            shutil.rmtree(out / "fusion_bench" / "method" / upstream_folder)
    for path, text in written.items():
        _write(path, text)
    return sorted(written)


def overlay(export_dir: Path, fusion_bench_tree: Path) -> None:
    """Apply an export to a copy of FusionBench laid out as installed (``fusion_bench/`` and
    ``fusion_bench_config/`` side by side): the exported ``config/`` goes into ``fusion_bench_config/``."""
    shutil.copytree(export_dir / "fusion_bench", fusion_bench_tree / "fusion_bench", dirs_exist_ok=True)
    shutil.copytree(export_dir / "config", fusion_bench_tree / "fusion_bench_config", dirs_exist_ok=True)
