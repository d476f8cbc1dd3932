"""Representation Surgery combined with tinting (the reference code's ``--surgery``).

Each task gets a small bottleneck adapter on the features its head reads: ``z - up(relu(down(z)))``
(Yang et al., Representation Surgery for Multi-Task Model Merging, ICML 2024), trained jointly with the
merging coefficients and the tinted head. ``down`` starts from Kaiming-uniform weights and ``up`` from zeros,
so the adapter starts as the identity and the run starts where plain Model Tinting does. Family-agnostic:
the adapter acts on the last dimension of whatever the head consumes (CLIP image embeddings, BERT's pooled
output, RoBERTa's token states, GPT-2's last-token state).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .errors import TintingConfigError


class SurgeryAdapter(nn.Module):
    """``z - up(relu(down(z)))`` with a ``rank``-dimensional bottleneck; the identity at initialisation."""

    def __init__(self, dim: int, rank: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        with torch.no_grad():  # PyTorch's Linear initialisation, from a seeded generator
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5), generator=generator)
            nn.init.zeros_(self.up.weight)

    def forward(self, features: Tensor) -> Tensor:
        return features - self.up(self.down(features).relu())


class SurgeryHead(nn.Module):
    """A task's head behind its surgery adapter; it takes the same features as the head alone."""

    def __init__(self, head: nn.Module, rank: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        reference = next(head.parameters())
        self.adapter = SurgeryAdapter(feature_dim(head), rank, generator).to(reference.device, reference.dtype)
        self.head = head

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.adapter(features))


def feature_dim(head: nn.Module) -> int:
    """Width of the features a head reads: the input width of its first linear layer."""
    first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise TintingConfigError(f"surgery: cannot tell the feature width of a {type(head).__name__} head (no Linear layer).")
    return first.in_features


def check_surgery_options(surgery: bool, tinted_layer, train_tinted_layer: bool) -> None:
    """Surgery trains each task's adapter with its head (as the reference code), so it needs a trained head."""
    if surgery and (str(tinted_layer) != "head" or not train_tinted_layer):
        raise TintingConfigError(
            "surgery=true trains each task's adapter with its head (as the reference code): it needs "
            "tinted_layer=head and train_tinted_layer=true."
        )
