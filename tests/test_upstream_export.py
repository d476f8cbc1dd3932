"""The upstream export: the methods written into a copy of FusionBench run there without this plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, task_accuracies

from fusion_bench_tinting.upstream import export as upstream

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE = "tiny-clip_TA4"

#: this repository off the path and any import of the plugin (or its Hydra plugin) refused; FusionBench
#: must come from the current folder's copy
BLOCK_PLUGIN = """
import importlib.abc, os, sys
blocked_root = os.path.realpath(os.environ["BLOCKED_ROOT"])
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != blocked_root]

class RefusePlugin(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fusion_bench_tinting" or name.startswith("hydra_plugins.fusion_bench_tinting"):
            raise ModuleNotFoundError(f"{name} is not importable in this run")
        return None

sys.meta_path.insert(0, RefusePlugin())
import fusion_bench
assert os.path.realpath(fusion_bench.__file__).startswith(os.path.realpath(os.getcwd())), fusion_bench.__file__
"""
#: FusionBench's CLI, run from the copy without the plugin
WITHOUT_PLUGIN = (
    BLOCK_PLUGIN
    + """
from fusion_bench.scripts.cli import _hydra_main
sys.argv = ["fusion_bench", *sys.argv[1:]]
_hydra_main()
"""
)


def _stock_taskpool_configs(tiny_suites: Path, out: Path) -> Path:
    """The tiny suite's configs with FusionBench's own CLIP task pool class (what an upstream user has)."""
    shutil.copytree(tiny_suites / "config", out)
    path = out / "taskpool" / f"{SUITE}.yaml"
    text = path.read_text().replace(
        "fusion_bench_tinting.evaluation.taskpool.TaskAwareCLIPVisionModelTaskPool",
        "fusion_bench.taskpool.CLIPVisionModelTaskPool",
    )
    assert "fusion_bench.taskpool.CLIPVisionModelTaskPool" in text
    path.write_text(text)
    return out


def _fusion_bench_copy(out: Path) -> Path:
    """The installed FusionBench package and its configs, copied as installed."""
    root = upstream.fusion_bench_root()
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(root, out / "fusion_bench", ignore=ignore)
    shutil.copytree(root.parent / "fusion_bench_config", out / "fusion_bench_config", ignore=ignore)
    return out


@pytest.mark.slow
def test_exported_methods_run_in_fusion_bench_without_the_plugin(tiny_suites, tmp_path):
    configs = _stock_taskpool_configs(tiny_suites, tmp_path / "configs")
    config_dir = ["--config-dir", str(configs)]
    args = [f"modelpool={SUITE}", f"taskpool={SUITE}", "method.max_steps=10"]
    plugin = run_cli([*config_dir, "method=model_tinting", *args], tmp_path / "plugin_log")

    written = upstream.export(tmp_path / "export")
    assert tmp_path / "export" / "CHANGES.diff" in written
    tree = _fusion_bench_copy(tmp_path / "fusion_bench_tree")
    upstream.overlay(tmp_path / "export", tree)
    log_dir = tmp_path / "export_log"
    command = [
        sys.executable,
        "-c",
        WITHOUT_PLUGIN,
        *config_dir,
        "method=model_tinting/model_tinting",
        *args,
        "fabric.accelerator=cpu",
        "print_config=false",
        f"path.log_dir={log_dir}",
    ]
    env = {**os.environ, "BLOCKED_ROOT": str(REPO_ROOT), "PYTHONPATH": str(tree)}
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    output = result.stdout + result.stderr
    assert "fusion_bench_tinting" not in output
    # the plugin's run-time task-pool completion stays in the plugin: FusionBench's own CLIP task pool, chosen
    # on the command line, evaluates each task with its own tinted layer (the same accuracies as the plugin's)
    assert "Task pool evaluating this run" not in output
    exported = json.loads((log_dir / "program_report.json").read_text())
    assert task_accuracies(exported) == pytest.approx(task_accuracies(plugin), abs=1e-9)
    assert len(task_accuracies(exported)) == 4
    assert (log_dir / "model_tinting.safetensors").exists()


def _exported_tree(tmp_path: Path) -> Path:
    upstream.export(tmp_path / "export")
    tree = _fusion_bench_copy(tmp_path / "fusion_bench_tree")
    upstream.overlay(tmp_path / "export", tree)
    shutil.copytree(tmp_path / "export" / "tests", tree / "tests")
    return tree


def test_exported_unit_tests_pass_inside_fusion_bench_without_the_plugin(tmp_path):
    tree = _exported_tree(tmp_path)
    command = [sys.executable, "-c", BLOCK_PLUGIN + "import unittest; unittest.main(module=None)", "discover", "tests"]
    env = {**os.environ, "BLOCKED_ROOT": str(REPO_ROOT), "PYTHONPATH": str(tree)}
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "Ran 7 tests" in result.stderr and result.stderr.rstrip().endswith("OK")


def _imported_modules(path: Path, package: Path):
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    import ast

    here = ["fusion_bench_tinting", *path.relative_to(package).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            yield ".".join([*base, *([node.module] if node.module else [])])


def test_the_core_imports_nothing_from_the_plugin_layer():
    package = REPO_ROOT / "fusion_bench_tinting"
    allowed = {
        "core": ("fusion_bench_tinting.core",),  # the LOT start is the plugin's (starts.py)
        "lot_merging": ("fusion_bench_tinting.core", "fusion_bench_tinting.lot_merging"),
    }
    offenders = [
        f"{path.relative_to(package)} imports {module}"
        for folder, prefixes in allowed.items()
        for path in sorted((package / folder).rglob("*.py"))
        for module in _imported_modules(path, package)
        if module.split(".")[0] == "fusion_bench_tinting" and not module.startswith(prefixes)
    ]
    assert offenders == []
    # the check sees a plugin import: the plugin's own method classes import its layers
    assert "fusion_bench_tinting.suites" in set(_imported_modules(package / "methods.py", package))


def test_export_writes_fusion_bench_layout_with_renamed_imports(tmp_path):
    upstream.export(tmp_path)
    package = tmp_path / "fusion_bench" / "method" / "model_tinting"
    sources = {path: path.read_text() for path in package.rglob("*.py")}
    assert package / "algorithm.py" in sources and package / "families" / "hf_clip.py" in sources
    assert not (package / "comparison").exists() and not (package / "upstream").exists()
    assert not [
        path
        for path, text in sources.items()
        if "import fusion_bench_tinting" in text or "from fusion_bench_tinting" in text
    ]
    config = (tmp_path / "config" / "method" / "model_tinting" / "model_tinting.yaml").read_text()
    assert "_target_: fusion_bench.method.model_tinting.ModelTintingAlgorithm" in config
    plusplus = (tmp_path / "config" / "method" / "model_tinting" / "model_tinting_plusplus.yaml").read_text()
    assert "_target_: fusion_bench.method.model_tinting.ModelTintingPlusPlus" in plusplus
    diff = (tmp_path / "CHANGES.diff").read_text()
    assert "+            model.set_task(task_name)" in diff and '+    "model_tinting": [' in diff
    assert (tmp_path / "docs" / "algorithms" / "model_tinting.md").read_text().startswith("# Model Tinting")


def test_a_fusion_bench_release_with_other_text_stops_the_export_naming_file_and_anchor():
    with pytest.raises(
        upstream.ExportError, match=r"fusion_bench/x.py: expected the text '_is_setup = False' once, found it 0"
    ):
        upstream.apply_edits("class Other:\n    pass\n", upstream.CLIP_TASKPOOL_EDITS, "fusion_bench/x.py")


def test_command_line_reports_an_export_error_in_one_line(tmp_path, monkeypatch, capsys):
    from fusion_bench_tinting.upstream.__main__ import main

    monkeypatch.setattr(upstream, "CLIP_TASKPOOL_EDITS", (("no such text\n", ""),))
    assert main([str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        "export_upstream: fusion_bench/taskpool/clip_vision/taskpool.py: expected the text 'no such text'"
    )
    assert len(error.splitlines()) == 1
