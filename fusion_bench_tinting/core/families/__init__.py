"""Model families: how the family-agnostic tinting algorithm talks to each kind of model pool."""

from __future__ import annotations

import importlib
from typing import Any, List, Sequence, Tuple

import torch
from fusion_bench import BaseModelPool
from lightning import Fabric

from ..errors import TintingConfigError
from .base import PRETRAINED, ModelFamily

#: (model pool classes, family class, how a user names such a pool) in the order they are tried, classes as
#: "module:name" so that a family's dependencies are imported only when its pool is in use;
#: :func:`register_family` adds families defined elsewhere.
_FAMILIES: List[Tuple[Tuple[str, ...], str, str]] = [
    (
        ("fusion_bench.modelpool:CLIPVisionModelPool",),
        f"{__name__}.hf_clip:HFCLIPVisionFamily",
        "CLIPVisionModelPool (e.g. modelpool=clip-vit-base-patch32_TA8)",
    ),
]


def register_family(pools: Sequence[str], family: str, described_as: str) -> None:
    """Adapt model pools of the classes ``pools`` ("module:name") with the family class ``family``
    ("module:name"), tried before the families already known; ``described_as`` names such pools for a user."""
    _FAMILIES.insert(0, (tuple(pools), family, described_as))


def _load(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def family_for(modelpool: BaseModelPool, fabric: Fabric, adaptation_split: str = "test", **options: Any) -> ModelFamily:
    """The family adapter for ``modelpool`` (adapting on its ``adaptation_split`` datasets; ``options``: the
    family's other constructor arguments), fully configured; a clear error for pools we do not support."""
    for pools, family, _ in _FAMILIES:
        if isinstance(modelpool, tuple(_load(pool) for pool in pools)):
            return _load(family)(modelpool, torch.device(fabric.device), adaptation_split=adaptation_split, **options)
    supported = "; ".join(described for _, _, described in reversed(_FAMILIES))
    raise TintingConfigError(
        f"Model Tinting does not support model pools of type {type(modelpool).__name__}; supported: {supported}."
    )


__all__ = ["ModelFamily", "PRETRAINED", "family_for", "register_family"]
