"""The learned merging coefficients as a heat map (tasks x coefficient groups), for TensorBoard and the
comparison's charts. Kept apart from the comparison's other charts: the method itself draws it."""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

import matplotlib

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
