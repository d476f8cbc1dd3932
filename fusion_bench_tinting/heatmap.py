"""The learned merging coefficients as a heat map (tasks x coefficient groups): in TensorBoard after each
adaptation of the plugin's methods, beside the options and the final loss (:class:`CoefficientHeatmapMixin`),
and in the comparison's charts."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: the transformer block a coefficient group belongs to (CLIP, OpenCLIP, BERT-style and GPT-2 layouts)
BLOCK_OF_GROUP = re.compile(r"(?:layers?|resblocks|h|layer)\.(\d+)\.")


def blocks_of_groups(groups: Sequence[str]) -> List[Optional[int]]:
    return [int(m.group(1)) if (m := BLOCK_OF_GROUP.search(g)) else None for g in groups]


def coefficient_heatmap_figure(
    coefficients: np.ndarray, tasks: Sequence[str], layer_of_group: Sequence[Optional[int]], title: str
):
    """Learned coefficients, tasks x coefficient groups (in parameter order), with block boundaries."""
    figure, axes = plt.subplots(figsize=(12, 0.4 * len(tasks) + 1.8))
    image = axes.imshow(
        coefficients, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1e-6, float(coefficients.max()))
    )
    axes.set_yticks(range(len(tasks)))
    axes.set_yticklabels(tasks, fontsize=8)
    ticks, labels, previous = [], [], object()
    for index, layer in enumerate(layer_of_group):
        if layer != previous and layer is not None:
            ticks.append(index)
            labels.append(str(layer))
        previous = layer
    axes.set_xticks(ticks)
    axes.set_xticklabels(labels, fontsize=7)
    axes.set_xlabel("transformer block (coefficients in parameter order)")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.02)
    figure.tight_layout()
    return figure


def log_coefficient_heatmap(
    fabric: Any, coefficients: np.ndarray, tasks: Sequence[str], groups: Sequence[str], step: int
):
    """The learned merging coefficients, tasks x coefficient groups, as an image in TensorBoard."""
    loggers = [logger for logger in fabric.loggers if hasattr(getattr(logger, "experiment", None), "add_figure")]
    if not loggers or not fabric.is_global_zero:
        return
    figure = coefficient_heatmap_figure(coefficients, tasks, blocks_of_groups(groups), "learned merging coefficients")
    for logger in loggers:
        logger.experiment.add_figure("coefficients/heatmap", figure, global_step=step)


class CoefficientHeatmapMixin:
    """After an adaptation, its learned coefficients as a heat map beside the options and final loss."""

    def _log_summary(self, run: Any, stats: Any) -> None:
        super()._log_summary(run, stats)
        options = {**OmegaConf.to_container(self.config), **self._resolved_values(run.plan)}
        log_run_summary(self.fabric, options, run, stats)
        coefficients = run.merger.effective_coefficients().detach().cpu().numpy()
        log_coefficient_heatmap(self.fabric, coefficients, run.tasks, run.merger.group_names, run.max_steps)


def log_hyperparameters(fabric: Any, params: Dict[str, Any], metrics: Dict[str, float]) -> None:
    """The run's options (``auto`` resolved) with its end results to every Fabric logger (TensorBoard: its
    HPARAMS tab, which needs at least one metric beside the options)."""
    for logger in fabric.loggers:
        logger.log_hyperparams(params, metrics=metrics)


def log_run_summary(fabric: Any, options: Dict[str, Any], run: Any, stats: Any) -> None:
    """The options (``auto`` resolved) with the final loss (TensorBoard's HPARAMS tab)."""
    losses = list(stats.final_loss.values())
    log_hyperparameters(
        fabric, {**options, "tasks": ",".join(run.tasks)}, {"hparams/final_loss": sum(losses) / len(losses)}
    )
