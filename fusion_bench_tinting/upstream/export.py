"""Write the methods as a change to FusionBench's own source tree, ready for a pull request.

The tree written to ``DIR`` mirrors FusionBench's repository:

- ``fusion_bench/method/model_tinting/``: this package's method code (families, merging, adaptation,
  LOT Merging, the task-aware pools for OpenCLIP and text), imports renamed; the comparison, the suite
  builders, the benchmarks and this exporter stay in the plugin;
- ``fusion_bench/method/__init__.py``: FusionBench's own file with the methods in its lazy import table;
- ``fusion_bench/taskpool/clip_vision/taskpool.py``: FusionBench's CLIP task pool, whose
  ``on_task_evaluation_begin`` hook calls ``set_task`` on a model that has it and evaluates a model's
  ``task_head`` when it has one (the hook now runs after the zero-shot head is set, so that it can replace it);
- ``config/method/model_tinting/{model_tinting,model_tinting_plusplus}.yaml`` and
  ``config/method/lot_merging/lot_merging.yaml``, in FusionBench's layout (``method=model_tinting/model_tinting``);
- ``docs/algorithms/model_tinting.md``, in FusionBench's docs format;
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
UPSTREAM = "fusion_bench.method.model_tinting"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_DIR.parent / "config" if (PACKAGE_DIR.parent / "config").is_dir() else PACKAGE_DIR / "config"
#: subpackages and modules that serve the plugin's own workflow, not the methods
PLUGIN_ONLY = ("comparison", "testing", "offline", "benchmarks", "upstream", "program_console.py", "method_configs.py")
#: method config -> its place in FusionBench's config tree
METHOD_CONFIGS = {
    "model_tinting.yaml": "method/model_tinting/model_tinting.yaml",
    "model_tinting_plusplus.yaml": "method/model_tinting/model_tinting_plusplus.yaml",
    "lot_merging.yaml": "method/lot_merging/lot_merging.yaml",
}
METHOD_CLASSES = ("LOTMergingAlgorithm", "ModelTintingAlgorithm", "ModelTintingPlusPlus")


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
    names = ", ".join(f'"{name}"' for name in METHOD_CLASSES)
    return (
        ("_import_structure = {\n", f'_import_structure = {{\n    "model_tinting": [{names}],\n'),
        ("if TYPE_CHECKING:\n", f"if TYPE_CHECKING:\n    from .model_tinting import {', '.join(METHOD_CLASSES)}\n"),
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
    """``fusion_bench_tinting.x`` -> ``fusion_bench.method.model_tinting.x`` (strings such as the weights
    file's format tag, which have no dot after the name, are left alone)."""
    return re.sub(rf"\b{PLUGIN}(?=[.\s])", UPSTREAM, source)


# --------------------------------------------------------------------------------------------- writers
def fusion_bench_root() -> Path:
    """The installed ``fusion_bench`` package folder (found as the Hydra plugin finds it)."""
    from hydra_plugins.fusion_bench_tinting.search_path import _package_dir

    root = _package_dir("fusion_bench")
    if root is None:
        raise ExportError("FusionBench is not installed: the export edits its installed source.")
    return root


def method_sources() -> Dict[str, str]:
    """The package's method modules, path relative to the package -> source with renamed imports."""
    sources = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR)
        if relative.parts[0] in PLUGIN_ONLY or "__pycache__" in relative.parts:
            continue
        sources[relative.as_posix()] = rename_imports(path.read_text())
    return sources


def method_configs() -> Dict[str, str]:
    configs = {}
    for name, target in METHOD_CONFIGS.items():
        text = rename_imports((CONFIG_DIR / "method" / name).read_text())
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
        written[out / "fusion_bench" / "method" / "model_tinting" / relative] = source
    for relative, text in method_configs().items():
        written[out / "config" / relative] = text
    written[out / "docs" / "algorithms" / "model_tinting.md"] = (Path(__file__).parent / "model_tinting.md").read_text()
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
    if (out / "fusion_bench" / "method" / "model_tinting").exists():
        shutil.rmtree(out / "fusion_bench" / "method" / "model_tinting")
    for path, text in written.items():
        _write(path, text)
    return sorted(written)


def overlay(export_dir: Path, fusion_bench_tree: Path) -> None:
    """Apply an export to a copy of FusionBench laid out as installed (``fusion_bench/`` and
    ``fusion_bench_config/`` side by side): the exported ``config/`` goes into ``fusion_bench_config/``."""
    shutil.copytree(export_dir / "fusion_bench", fusion_bench_tree / "fusion_bench", dirs_exist_ok=True)
    shutil.copytree(export_dir / "config", fusion_bench_tree / "fusion_bench_config", dirs_exist_ok=True)
