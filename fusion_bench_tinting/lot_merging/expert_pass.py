"""One statistics pass of an expert over a few of its task's unlabelled inputs (shared by LOT
Merging and by tinting's ``init_from=lot``)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..core.families import ModelFamily
from .solver import LOTSolver


def sample_indices(total: int, num_samples: int, seed: int) -> list:
    """``num_samples`` distinct rows of a ``total``-row test set, seeded, in increasing order (all when fewer)."""
    if total <= num_samples:
        return list(range(total))
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:num_samples]
    return sorted(chosen.tolist())


@torch.no_grad()
def observe_expert(
    solver: LOTSolver,
    family: ModelFamily,
    task: str,
    pretrained: Mapping[str, Tensor],
    expert: nn.Module,
    *,
    num_samples: int,
    seed: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> None:
    """Preprocess ``num_samples`` of the task's test inputs, run ``expert`` over them with its layers
    observed, and fold the statistics and its task vector into ``solver``."""
    indices = sample_indices(family.adaptation_size(task), num_samples, seed)
    inputs = family.adaptation_inputs(
        task, batch_size=batch_size, num_workers=num_workers, dtype=torch.float32, indices=indices
    )
    expert = expert.to(device)
    solver.add_task(
        pretrained,
        expert,
        inputs.batches(batch_size, device, torch.float32),
        forward=lambda batch: family.encode(expert, batch),
        token_mask=family.token_mask,
    )
