"""What a tinting run hands back and keeps: the merged model with each task's tinted layer, its report, and
the saved coefficients and tinted layers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
from fusion_bench.utils.pylogger import get_rankzero_logger
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from .merging import LayerWiseMerger
from .run_state import AdaptationStats, TaskState
from .tinted_model import TintedModel, TintModulator
from .weights_io import WEIGHTS_FILE, save_tinting, write_atomically

if TYPE_CHECKING:
    from .run_state import TintingRun

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only

#: coefficients below this magnitude count as unused in the report's sparsity
SPARSITY_THRESHOLD = 1e-5
#: saved tensors of a task that are encoder tensors of its head (BERT's pooler), not of its head module
HEAD_ENCODER_PREFIX = "encoder."
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


def tinted_model(
    pretrained: nn.Module,
    merger: LayerWiseMerger,
    states: List[TaskState],
    block_names: List[str],
    report: Dict[str, Any],
) -> TintedModel:
    """The merged encoder (written into ``pretrained``) with each task's tinted layer as its modulator."""
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


def adaptation_report(
    stats: AdaptationStats,
    *,
    iterations: int,
    lr: float,
    init_values: float,
    confidence_filter: bool,
) -> Dict[str, Any]:
    """The report's account of an adaptation: its time, steps, resolved options and final losses."""
    report = {
        "adaptation_time_s": round(stats.seconds, 3),
        "first_iteration_s": round(stats.first_iteration_seconds, 3),
        "optimizer_steps": stats.optimizer_steps,
        "skipped_steps": stats.skipped_steps,
        "iterations": iterations,
        "lr": lr,
        "init_values": init_values,
        "final_loss_per_task": stats.final_loss,
    }
    if confidence_filter:
        report["filter_dropped_fraction"] = stats.dropped_fraction()
    report.update(stats.extras)
    return report


def save_result(
    log_dir: Optional[str], merger: LayerWiseMerger, states: List[TaskState], tinted_layer: str, origin: str
) -> Optional[str]:
    """Write the coefficients and tinted layers to ``<log_dir>/`` :data:`WEIGHTS_FILE`; None without a log folder.
    Coefficients on Task Arithmetic's origin, one per tensor, also go to ``merging_weights.pt`` in FusionBench's
    AdaMerging layout (a start for ``init_from=adamerging``)."""
    if log_dir is None:
        log.warning("No log folder (no Fabric logger): merging coefficients and tinted layers are not saved.")
        return None
    path = os.path.join(log_dir, WEIGHTS_FILE)
    save_tinting(
        path,
        task_names=[s.name for s in states],
        coefficient_groups=merger.group_names,
        coefficients=merger.coefficients.detach(),
        tinted={s.name: saved_task_tensors(s) for s in states},
        tinted_layer=tinted_layer,
        extra_metadata={"origin": origin},
    )
    written = [WEIGHTS_FILE]
    if origin == "task_arithmetic":
        # weights of the pretrained model's task vectors: AdaMerging's layout
        save_merging_weights(os.path.join(log_dir, ADAMERGING_FILE), merger.coefficients)
        written.append(f"{ADAMERGING_FILE} (AdaMerging's layout)")
    rank_zero_only(print)(f"Saved in {os.path.abspath(log_dir)}: {', '.join(written)}", flush=True)
    return path


def save_merging_weights(path: str, coefficients: Tensor) -> None:
    """Write (tasks x parameter tensors) coefficients as FusionBench's layer-wise AdaMerging saves its
    ``merge_weight`` (``torch.save``, rows in the pool's model order, columns in ``named_parameters`` order)."""
    write_atomically(path, lambda temporary: torch.save(coefficients.detach().cpu().clone(), temporary))


def finish_run(
    run: "TintingRun", report: Dict[str, Any], *, save: bool, log_dir: Optional[str], tinted_layer: str, origin: str
) -> Tuple[TintedModel, Optional[str]]:
    """The merged model with each task's tinted layer and its report; when ``save``, the learned coefficients
    and tinted layers in ``log_dir``. Returns the model and the saved file (or None)."""
    model = tinted_model(run.pretrained, run.merger, run.states, run.base.block_names, report)
    if not save:
        return model, None
    return model, save_result(log_dir, run.merger, run.states, tinted_layer, origin)
