"""Suite aliases, the Hydra search-path plugin and the Python 3.11 compatibility shim."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fusion_bench_tinting.compat import ensure_typing_override
from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = {"base-patch32": "ViT-B/32", "base-patch16": "ViT-B/16", "large-patch14": "ViT-L/14"}
SUITES = {"TA8": "TA8", "TA14": "TALL14", "TA20": "TALL20", "TALL14": "TALL14", "TALL20": "TALL20"}
NUM_TASKS = {"TA8": 8, "TALL14": 14, "TALL20": 20}


def _compose(overrides):
    with initialize_config_dir(config_dir=str(fusion_bench_config_dir()), version_base=None):
        return OmegaConf.to_container(compose("fabric_model_fusion", overrides=overrides), resolve=False)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("suite", SUITES)
def test_suite_alias_selects_fusion_bench_models_data_and_a_matching_task_pool(size, suite):
    fb_suite = SUITES[suite]
    ours = _compose([f"modelpool=clip-vit-{size}_{suite}", f"taskpool=clip-vit-{size}_{suite}"])
    fusion_bench = _compose(
        [
            f"modelpool=CLIPVisionModelPool/clip-vit-{size}_{fb_suite}",
            f"taskpool=CLIPVisionModelTaskPool/clip-vit-classification_{fb_suite}",
        ]
    )
    modelpool, reference = ours["modelpool"], fusion_bench["modelpool"]
    assert modelpool["_target_"] == "fusion_bench.modelpool.CLIPVisionModelPool"
    assert modelpool["models"] == reference["models"]
    assert len(modelpool["models"]) == NUM_TASKS[fb_suite] + 1
    assert modelpool["test_datasets"] == reference["test_datasets"]
    assert modelpool["train_datasets"] == reference["train_datasets"]
    processor = reference["processor"]
    assert modelpool["processor"] == (
        processor if isinstance(processor, str) else processor["pretrained_model_name_or_path"]
    )

    taskpool = ours["taskpool"]
    assert taskpool["_target_"] == "fusion_bench_tinting.evaluation.taskpool.TaskAwareCLIPVisionModelTaskPool"
    assert taskpool["base_model"] == f"openai/clip-vit-{size}"
    assert taskpool["test_datasets"] == fusion_bench["taskpool"]["test_datasets"]


@pytest.mark.parametrize("model", ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
def test_open_clip_suite_aliases(model):
    ours = _compose([f"modelpool={model}_TA8", f"taskpool={model}_TA8"])
    reference = _compose(
        [f"modelpool=OpenCLIPVisionModelPool/{model}_TA8", f"taskpool=OpenCLIPVisionModelTaskPool/{model}_TA8"]
    )
    assert ours["modelpool"] == reference["modelpool"]
    assert (
        ours["taskpool"]["_target_"]
        == "fusion_bench_tinting.families.open_clip_taskpool.TaskAwareOpenCLIPVisionModelTaskPool"
    )
    assert ours["taskpool"]["classification_heads"] == reference["taskpool"]["classification_heads"]


def _suites_shipped():
    config = REPO_ROOT / "config"
    pairs = {p.stem for p in (config / "modelpool").glob("*.yaml")} & {
        p.stem for p in (config / "taskpool").glob("*.yaml")
    }
    return sorted(pairs | {"gpt-2_glue"})  # FusionBench ships both halves of that one


@pytest.mark.parametrize("suite", _suites_shipped())
def test_plus_suite_selects_the_same_model_pool_and_task_pool_as_naming_both(suite):
    from fusion_bench_tinting.suites import suite_config

    assert (REPO_ROOT / "config" / "suite" / f"{suite}.yaml").read_text() == suite_config(suite)
    for method in ("model_tinting", "task_arithmetic"):
        chosen = _compose([f"method={method}", f"+suite={suite}"])
        named = _compose([f"method={method}", f"modelpool={suite}", f"taskpool={suite}"])
        assert chosen["modelpool"] == named["modelpool"] and chosen["taskpool"] == named["taskpool"]
        assert chosen["method"] == named["method"]


def test_method_configs_compose_with_reference_defaults():
    method = _compose(["method=model_tinting"])["method"]
    assert method["_target_"] == "fusion_bench_tinting.ModelTintingAlgorithm"
    assert (method["lr"], method["max_steps"], method["batch_size"], method["init_values"]) == (
        "auto",
        "auto",
        32,
        "auto",
    )
    assert (method["loss"], method["tinted_layer"], method["clamp_weights"]) == (
        "ce",
        "head",
        True,
    )
    plusplus = _compose(["method=model_tinting_plusplus"])["method"]
    assert plusplus["_target_"] == "fusion_bench_tinting.ModelTintingPlusPlus"
    assert plusplus["confidence_filter"] is True and plusplus["loss"] == "ce"


@pytest.mark.parametrize(
    "method, cls", [("model_tinting", "ModelTintingAlgorithm"), ("lot_merging", "LOTMergingAlgorithm")]
)
def test_method_config_keys_are_the_constructor_arguments(method, cls):
    import inspect

    import fusion_bench_tinting

    config = _compose([f"method={method}"])["method"]
    assert config["_target_"] == f"fusion_bench_tinting.{cls}"
    parameters = inspect.signature(getattr(fusion_bench_tinting, cls).__init__).parameters
    assert set(config) - {"_target_"} == set(parameters) - {"self", "kwargs"}
    # the config's values are the constructor's defaults (one source of truth for the reference values)
    for name, value in config.items():
        if name != "_target_":
            assert parameters[name].default == value, name


@pytest.mark.parametrize("name", ["model_tinting.yaml", "lot_merging.yaml"])
def test_each_method_config_file_is_its_option_declaration(name):
    """One declaration per option: the YAML is written from it (python -m fusion_bench_tinting.method_configs)."""
    from fusion_bench_tinting.method_configs import CONFIG_DIR, METHOD_CONFIGS, rendered

    assert (CONFIG_DIR / name).read_text() == rendered(name), (
        "rewrite it: python -m fusion_bench_tinting.method_configs"
    )
    options = METHOD_CONFIGS[name][0]
    assert len(options.names) <= 25
    assert all(option.help and option.allowed for option in options.options.values())


def test_an_option_that_does_not_change_the_result_stays_out_of_the_checkpoint_fingerprint():
    from fusion_bench_tinting.checkpointing import fingerprint
    from fusion_bench_tinting.methods import COMMAND_OPTIONS

    ignored = COMMAND_OPTIONS.not_changing_result()
    assert {"resume", "checkpoint_every", "compile_step", "weights"} <= set(ignored) and "lr" not in ignored
    method = COMMAND_OPTIONS.defaults()
    kept = fingerprint(["a"], {}, method, ignore=ignored)["method"]
    assert set(kept) == set(method) - set(ignored) - {"max_steps"}


@pytest.mark.slow
@pytest.mark.parametrize("cwd", ["repo", "elsewhere"])
def test_cli_finds_our_configs_from_any_folder(cwd, tmp_path):
    """FusionBench's CLI takes ./config as its primary config folder when it exists (our repository
    root has one); the plugin keeps FusionBench's and our configs reachable either way."""
    folder = REPO_ROOT if cwd == "repo" else tmp_path
    result = subprocess.run(
        ["fusion_bench", "method=model_tinting", "modelpool=clip-vit-base-patch16_TA14", "--cfg", "job"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = OmegaConf.create(result.stdout)
    assert config.method._target_ == "fusion_bench_tinting.ModelTintingAlgorithm"
    assert len(config.modelpool.models) == 15


def test_typing_override_shim(monkeypatch):
    monkeypatch.delattr(typing, "override", raising=False)
    assert ensure_typing_override() is True
    assert typing.override(lambda: 1)() == 1
    assert ensure_typing_override() is False


def test_plugin_discovery_alone_makes_fusion_bench_open_clip_pool_importable():
    """Hydra imports our plugin before composing; that import must install the shim so that
    FusionBench's OpenCLIP pool (``from typing import override``) imports on Python 3.10/3.11."""
    code = (
        "import sys, typing\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.search_path_plugin import SearchPathPlugin\n"
        "names = [p.__name__ for p in Plugins.instance().discover(SearchPathPlugin)]\n"
        "assert 'FusionBenchTintingSearchPathPlugin' in names, names\n"
        "assert 'fusion_bench_tinting.core.algorithm' not in sys.modules\n"
        "from fusion_bench.modelpool.openclip_vision.modelpool import OpenCLIPVisionModelPool\n"
        "print('ok', sys.version_info[:2])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_the_constructors_refuse_unknown_options_and_accept_fusion_bench_keys():
    from fusion_bench_tinting import LOTMergingAlgorithm, ModelTintingAlgorithm, ModelTintingPlusPlus
    from fusion_bench_tinting.core.errors import TintingConfigError

    for cls, wrong, closest in [
        (ModelTintingAlgorithm, "max_step", "max_steps"),
        (ModelTintingPlusPlus, "lrr", "lr"),
        (LOTMergingAlgorithm, "ridg", "ridge"),
    ]:
        with pytest.raises(
            TintingConfigError, match=rf"method.{wrong}: no such option; did you mean method.{closest}\?"
        ):
            cls(**{wrong: 1})
        cls(_recursive_=False, _usage_="a note")  # FusionBench's own keys
    with pytest.raises(TintingConfigError, match=r"method.frobnicate: no such option; Every option"):
        ModelTintingAlgorithm(frobnicate=1)


def test_pyproject_lists_exactly_the_package_folders():
    """A package folder that pyproject.toml does not list is left out of the installed wheel; a listed folder
    that no longer exists stops ``pip install`` on a fresh clone."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(path.parent.relative_to(root).parts)
        for top in ("fusion_bench_tinting", "hydra_plugins")
        for path in (root / top).rglob("__init__.py")
        if "__pycache__" not in path.parts and path.parent.relative_to(root).parts[-1] != "config"
    }
    assert listed == folders
