"""Give a run the task pool that matches its suite.

Hydra's defaults lists cannot let a model-pool config choose the task pool (FusionBench's root config
lists ``modelpool`` before ``taskpool``, and a non-primary config can only override groups that come
before it). So the suite aliases come in pairs: ``modelpool/<suite>.yaml`` and ``taskpool/<suite>.yaml``,
and our methods, at the end of ``run``, complete the program's task pool:

- no task pool was chosen (FusionBench's default ``dummy``) and the user did not pass ``taskpool=``:
  use the task pool named like the model pool choice (or its last path component), when one exists;
- a stock CLIP, OpenCLIP, GPT-2 GLUE, image-classification or NYUv2 task pool was chosen: replace it by its
  task-aware subclass, built from the same config, so that each task is evaluated with its own tinted layer
  (unless the stock class already does so: ``evaluates_per_task_models``, as in the upstream export's CLIP task pool).

This happens in FusionBench's public ``on_run_start`` hook, before any model is loaded, and the run says which
task pool will evaluate it (``--cfg job`` cannot: Hydra composes before any code of ours runs). FusionBench has
no public call to set a program's task pool, so the program's ``_taskpool`` config and
``_instantiate_and_setup`` are used; if they are gone, the run stops with what to pass instead.
``+suite=<name>`` (``config/suite/``) is Hydra's own spelling for choosing both pools at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from fusion_bench.utils.pylogger import get_rankzero_logger
from lightning.fabric.utilities.rank_zero import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict

from .compat import ensure_typing_override
from .core.errors import TintingConfigError
from .exits import one_line_config_errors

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only


def suite_config(name: str) -> str:
    """The ``suite/<name>.yaml`` config behind ``+suite=<name>``: Hydra's own spelling for choosing the model
    pool and the task pool of a suite together, for our methods and FusionBench's baselines alike."""
    return (
        "# @package _global_\n"
        f"# `+suite={name}`: the model pool and its task pool in one choice (FusionBench baselines included)\n"
        f"defaults:\n  - override /modelpool: {name}\n  - override /taskpool: {name}\n"
    )


def write_suite_config(config_dir: Path, name: str) -> None:
    (config_dir / "suite").mkdir(parents=True, exist_ok=True)
    (config_dir / "suite" / f"{name}.yaml").write_text(suite_config(name))


def _stock_to_task_aware():
    ensure_typing_override()
    from fusion_bench.taskpool import CLIPVisionModelTaskPool, GPT2TextClassificationTaskPool
    from fusion_bench.taskpool.image_classification import ImageClassificationTaskPool
    from fusion_bench.taskpool.nyuv2_taskpool import NYUv2TaskPool
    from fusion_bench.taskpool.openclip_vision.openclip_taskpool import OpenCLIPVisionModelTaskPool

    from .evaluation.taskpool import TaskAwareCLIPVisionModelTaskPool
    from .families.image_taskpool import TaskAwareImageClassificationTaskPool
    from .families.nyuv2_taskpool import TaskAwareNYUv2TaskPool
    from .families.open_clip_taskpool import TaskAwareOpenCLIPVisionModelTaskPool
    from .families.text_taskpool import TaskAwareGPT2TextClassificationTaskPool

    upgrades = {
        NYUv2TaskPool: TaskAwareNYUv2TaskPool,
        ImageClassificationTaskPool: TaskAwareImageClassificationTaskPool,
        CLIPVisionModelTaskPool: TaskAwareCLIPVisionModelTaskPool,
        OpenCLIPVisionModelTaskPool: TaskAwareOpenCLIPVisionModelTaskPool,
        GPT2TextClassificationTaskPool: TaskAwareGPT2TextClassificationTaskPool,
    }
    # a FusionBench whose own task pool switches per-task models (the upstream export's) keeps it
    return {stock: aware for stock, aware in upgrades.items() if not getattr(stock, "evaluates_per_task_models", False)}


def _hydra_run() -> Optional[Any]:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not GlobalHydra.instance().is_initialized() or not HydraConfig.initialized():
        return None
    return HydraConfig.get()


def _taskpool_chosen_explicitly(hydra_cfg) -> bool:
    for override in hydra_cfg.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "taskpool":
            return True
    return False


def suite_taskpool_config(hydra_cfg) -> Optional[DictConfig]:
    """The ``taskpool/<suite>`` config matching the model pool choice of this run, or None."""
    from hydra import compose
    from hydra.errors import HydraException

    choice = hydra_cfg.runtime.choices.get("modelpool")
    if not choice:
        return None
    for name in dict.fromkeys([choice, choice.rsplit("/", 1)[-1]]):
        try:
            cfg = compose(config_name=hydra_cfg.job.config_name, overrides=[f"taskpool={name}"])
        except HydraException:
            continue
        return OmegaConf.create(OmegaConf.to_container(cfg.taskpool, resolve=True))
    return None


class SuiteTaskPoolMixin:
    """For our methods: the run's task pool is completed or made task-aware at the start of the run."""

    def on_run_start(self) -> None:
        super().on_run_start()
        with one_line_config_errors():
            ensure_task_aware_taskpool(getattr(self, "_program", None))


def _check_program_shape(program: Any) -> None:
    missing = [name for name in ("taskpool", "_taskpool", "_instantiate_and_setup") if not hasattr(program, name)]
    if missing:
        raise TintingConfigError(
            f"FusionBench's program ({type(program).__name__}) has no {', '.join(missing)}: the suite's task-aware "
            "task pool cannot be set. Pass a task-aware task pool on the command line (taskpool=<suite>), or "
            "install the pinned fusion-bench==0.2.33."
        )


def ensure_task_aware_taskpool(program) -> None:
    """Complete or upgrade ``program.taskpool`` as described in the module docstring, and say which it is."""
    if program is None:
        return
    _check_program_shape(program)
    from fusion_bench.taskpool import DummyTaskPool

    taskpool = program.taskpool
    reason = "as chosen"
    if taskpool is None or isinstance(taskpool, DummyTaskPool):
        config = _suite_taskpool_for_this_run()
        if config is not None:
            program._taskpool = config
            program.taskpool = taskpool = program._instantiate_and_setup(config)
            reason = "the suite's task pool"
    upgrades = _stock_to_task_aware()
    if type(taskpool) in upgrades:
        config = OmegaConf.create(OmegaConf.to_container(program._taskpool, resolve=True))
        with open_dict(config):
            config._target_ = f"{upgrades[type(taskpool)].__module__}.{upgrades[type(taskpool)].__name__}"
        program._taskpool = config
        program.taskpool = taskpool = program._instantiate_and_setup(config)
        reason = "task-aware, so that each task uses its own tinted layer"
    name = "none" if taskpool is None else f"{type(taskpool).__module__}.{type(taskpool).__name__}"
    rank_zero_info(f"Task pool evaluating this run: {name} ({reason}).")


def _suite_taskpool_for_this_run() -> Optional[DictConfig]:
    hydra_cfg = _hydra_run()
    if hydra_cfg is None:
        return None
    if _taskpool_chosen_explicitly(hydra_cfg):
        log.info("taskpool was set on the command line: keeping it (no evaluation with `dummy`).")
        return None
    config = suite_taskpool_config(hydra_cfg)
    if config is None:
        log.warning(
            "No task pool selected and none matches modelpool=%s: results will not be evaluated. "
            "Use a suite name (e.g. modelpool=clip-vit-base-patch32_TA8) or pass taskpool=...",
            hydra_cfg.runtime.choices.get("modelpool"),
        )
    return config
