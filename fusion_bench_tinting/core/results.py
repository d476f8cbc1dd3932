"""What a tinting run hands back and keeps: the merged model with each task's tinted layer, its report, and
the saved coefficients and tinted layers."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch
from fusion_bench.utils.pylogger import get_rankzero_logger
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf
from torch import Tensor

from .merging import LayerWiseMerger
from .run_state import AdaptationStats, TaskState
from .tinted_model import TintedModel, TintModulator
from .weights_io import WEIGHTS_FILE, save_tinting, write_atomically

if TYPE_CHECKING:
    from .run_state import RunPlan, TintingRun

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only

#: coefficients below this magnitude count as unused in the report's sparsity
SPARSITY_THRESHOLD = 1e-5
#: saved tensors of a task that are encoder tensors of its head (BERT's pooler), not of its head module
HEAD_ENCODER_PREFIX = "encoder."
CONFIG_FILE, REPORT_FILE = "model_tinting_config.yaml", "model_tinting_report.json"
#: the file name FusionBench's CLIP AdaMerging config uses for ``save_merging_weights``
ADAMERGING_FILE = "merging_weights.pt"


def saved_task_tensors(state: TaskState) -> Dict[str, Tensor]:
    """What is saved of a task: its tinted block or head, and the encoder tensors of its head."""
    own = {HEAD_ENCODER_PREFIX + n: p.detach() for n, p in state.head_encoder.items()}
    if state.block:
        return {**{n: p.detach() for n, p in state.block.items()}, **own}
    return {**{k: v.detach() for k, v in state.head.state_dict().items()}, **own}


def coefficient_sparsity(merger: LayerWiseMerger, block_names: List[str]) -> float:
    """Fraction of the coefficients in use (not those of a tinted block) that are practically zero."""
    unused = set(merger.groups_of(block_names)) if block_names else set()
    used = [g for g in range(len(merger.group_names)) if g not in unused]
    coefficients = merger.effective_coefficients().detach()[:, used]
    return float((coefficients.abs() < SPARSITY_THRESHOLD).float().mean()) if used else 0.0


def tinted_model(run: "TintingRun", report: Dict[str, Any]) -> TintedModel:
    """The merged encoder (written into the pretrained one) with each task's tinted layer as its modulator."""
    pretrained, merger, states, block_names = run.pretrained, run.merger, run.states, run.base.block_names
    merger.load_into(pretrained)
    modulators = {}
    for state in states:
        own = {n: p.detach() for n, p in state.own_tensors().items()}
        if block_names:
            modulators[state.name] = TintModulator(block=own)
        else:
            modulators[state.name] = TintModulator(head=state.head.eval().requires_grad_(False), block=own)
    coefficients = merger.effective_coefficients().detach()
    report = {
        **report,
        "coefficients_below_1e-5": coefficient_sparsity(merger, block_names),
        "mean_coefficient_per_task": {s.name: float(c) for s, c in zip(states, coefficients.mean(dim=1))},
    }
    return TintedModel(pretrained.eval(), modulators, report)


def adaptation_report(stats: AdaptationStats, plan: "RunPlan", confidence_filter: bool) -> Dict[str, Any]:
    """The report's account of an adaptation: its time, steps, resolved options and final losses."""
    report = {
        "adaptation_time_s": round(stats.seconds, 3),
        "first_iteration_s": round(stats.first_iteration_seconds, 3),
        "optimizer_steps": stats.optimizer_steps,
        "skipped_steps": stats.skipped_steps,
        "iterations": plan.max_steps,
        "lr": plan.lr,
        "init_values": plan.init_value,
        "final_loss_per_task": stats.final_loss,
    }
    if confidence_filter:
        report["filter_dropped_fraction"] = stats.dropped_fraction()
    return {**report, **stats.extras}


def save_result(log_dir: Optional[str], run: "TintingRun", tinted_layer: str, config: Any, report: Dict) -> None:
    """Write the coefficients and tinted layers (:data:`WEIGHTS_FILE`), the config that reproduces them and the
    report to ``log_dir``. Coefficients on Task Arithmetic's origin also go to ``merging_weights.pt`` in
    FusionBench's layer-wise AdaMerging layout."""
    if log_dir is None:
        log.warning("No log folder (no Fabric logger): merging coefficients and tinted layers are not saved.")
        return
    merger, states, origin = run.merger, run.states, run.start.origin
    save_tinting(
        os.path.join(log_dir, WEIGHTS_FILE),
        task_names=[s.name for s in states],
        coefficient_groups=merger.group_names,
        coefficients=merger.coefficients.detach(),
        tinted={s.name: saved_task_tensors(s) for s in states},
        tinted_layer=tinted_layer,
        extra_metadata={"origin": origin},
    )
    written = [WEIGHTS_FILE]
    if origin == "task_arithmetic":
        save_merging_weights(os.path.join(log_dir, ADAMERGING_FILE), merger.coefficients)
        written.append(f"{ADAMERGING_FILE} (AdaMerging's layout)")
    write_atomically(os.path.join(log_dir, CONFIG_FILE), lambda path: OmegaConf.save(config, path))
    text = json.dumps(report, indent=2, default=str)
    write_atomically(os.path.join(log_dir, REPORT_FILE), lambda path: Path(path).write_text(text))
    rank_zero_only(print)(f"Saved in {os.path.abspath(log_dir)}: {', '.join(written)}", flush=True)


def save_merging_weights(path: str, coefficients: Tensor) -> None:
    """Write (tasks x parameter tensors) coefficients as FusionBench's layer-wise AdaMerging saves its
    ``merge_weight`` (``torch.save``, rows in the pool's model order, columns in ``named_parameters`` order)."""
    write_atomically(path, lambda temporary: torch.save(coefficients.detach().cpu().clone(), temporary))


def library_versions() -> Dict[str, str]:
    """The versions of the libraries a report was made with."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "fusion-bench", "fusion-bench-tinting", "open_clip_torch", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions
