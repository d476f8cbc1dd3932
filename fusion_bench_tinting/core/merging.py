"""Layer-wise merging of task vectors (AdaMerging's parameterisation) on one flat buffer:
``theta[p] = theta_pre[p] + sum_k c(lambda[k, p]) * tau_k[p]`` for every merged tensor p, ``c`` the optional
clamp to [0, 1]. The K task vectors live in one (K, N) buffer without grad; a merge is one fused multiply-add
per tensor, with no host synchronisation and no temporary the size of the task vectors."""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .errors import TintingConfigError


class ArchitectureMismatchError(TintingConfigError):
    """A fine-tuned model's parameters do not match the pretrained model's (a one-line error from the CLI)."""


def check_same_parameters(
    reference: Mapping[str, Tensor], other: Mapping[str, Tensor], other_name: str, source: str = ""
) -> None:
    """Raise a readable error when two parameter sets differ in names or shapes (``source``: the file)."""
    missing = [n for n in reference if n not in other]
    unexpected = [n for n in other if n not in reference]
    wrong_shape = [
        f"{n}: {tuple(other[n].shape)} vs {tuple(t.shape)}"
        for n, t in reference.items()
        if n in other and other[n].shape != t.shape
    ]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {len(missing)} parameter(s), e.g. {missing[:3]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected parameter(s), e.g. {unexpected[:3]}")
        if wrong_shape:
            details.append(f"{len(wrong_shape)} shape mismatch(es) (model vs pretrained), e.g. {wrong_shape[:3]}")
        raise ArchitectureMismatchError(
            f"The fine-tuned model {other_name!r}{f' ({source})' if source else ''} "
            "does not have the pretrained model's architecture: "
            + "; ".join(details)
            + ". Task vectors need every fine-tuned model to share the pretrained model's parameters."
        )


class LayerWiseMerger(nn.Module):
    """Holds theta_pre and the K task vectors; ``forward()`` returns the merged tensors by name."""

    def __init__(
        self,
        pretrained: Mapping[str, Tensor],
        num_tasks: int,
        *,
        init_value: float,
        clamp: bool = True,
        clamp_range: Tuple[float, float] = (0.0, 1.0),
        dtype: Optional[torch.dtype] = None,
        task_vector_dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if num_tasks < 1:
            raise ValueError("Merging needs at least one fine-tuned model.")
        self.names: List[str] = list(pretrained)
        self.shapes = [tuple(pretrained[n].shape) for n in self.names]
        self.numels = [pretrained[n].numel() for n in self.names]
        self.total = sum(self.numels)
        dtype = dtype or next(iter(pretrained.values())).dtype
        base = torch.cat([pretrained[n].detach().reshape(-1).to(dtype) for n in self.names])
        self.register_buffer("base", base, persistent=False)
        # task vectors may be stored narrower (bfloat16 halves the largest buffer); merges compute in `dtype`
        task_vector_dtype = task_vector_dtype or dtype
        self.register_buffer(
            "task_vectors", torch.zeros(num_tasks, self.total, dtype=task_vector_dtype), persistent=False
        )
        self._filled = [False] * num_tasks
        # tensors that no task changed, kept out of the per-step merge (see check_complete)
        self._unchanged_names: List[str] = []
        self._unchanged_shapes: List[tuple] = []
        self.register_buffer("unchanged", base[:0].clone(), persistent=False)

        #: the coefficients' columns: every merged tensor (the merge drops unchanged ones, see check_complete)
        self.group_names: List[str] = list(self.names)
        self.register_buffer("group_of_tensor", torch.arange(len(self.names)), persistent=False)
        self.clamp = clamp
        self.clamp_range = (float(clamp_range[0]), float(clamp_range[1]))
        self.coefficients = nn.Parameter(torch.full((num_tasks, len(self.group_names)), float(init_value)))

    @property
    def num_tasks(self) -> int:
        return self.coefficients.shape[0]

    def set_task_vector(self, task_index: int, finetuned: Mapping[str, Tensor]) -> None:
        """Store ``finetuned - pretrained`` as row ``task_index`` (names must match, see
        :func:`check_same_parameters`)."""
        flat = torch.cat([finetuned[n].detach().reshape(-1).to(self.base.dtype) for n in self.names])
        self.task_vectors[task_index].copy_((flat.to(self.base.device) - self.base).to(self.task_vectors.dtype))
        self._filled[task_index] = True

    @torch.no_grad()
    def rebase(self, offset: Mapping[str, Tensor]) -> None:
        """Move the origin of the merge by ``offset`` (e.g. to a LOT-merged encoder): the base gains it
        and every task vector loses it, so coefficient 1 for task k still gives fine-tuned model k and
        all-zero coefficients give ``base + offset``. Call before :meth:`check_complete`."""
        if self._unchanged_names:
            raise RuntimeError("rebase() must come before check_complete()")
        flat = torch.cat([offset[n].detach().reshape(-1).to(self.base) for n in self.names])
        self.base.add_(flat)
        self.task_vectors.sub_(flat.to(self.task_vectors.dtype))

    def check_complete(self) -> None:
        """Verify every task vector was set, then drop from the per-step computation the tensors that
        no fine-tuned model changed (e.g. embeddings frozen during fine-tuning): they merge to the
        pretrained value whatever the coefficients, so the result and the gradients stay exact."""
        missing = [i for i, filled in enumerate(self._filled) if not filled]
        if missing:
            raise RuntimeError(f"task vectors {missing} were never set")
        pieces = self.task_vectors.split(self.numels, dim=1)
        changed = [bool(piece.any()) for piece in pieces]
        if all(changed):
            return
        bases = self.base.split(self.numels)
        dropped = [i for i, keep in enumerate(changed) if not keep]
        self._unchanged_names = [self.names[i] for i in dropped]
        self._unchanged_shapes = [self.shapes[i] for i in dropped]
        self.unchanged = torch.cat([bases[i] for i in dropped])
        keep_index = [i for i, keep in enumerate(changed) if keep]
        self.names = [self.names[i] for i in keep_index]
        self.shapes = [self.shapes[i] for i in keep_index]
        self.numels = [self.numels[i] for i in keep_index]
        self.total = sum(self.numels)
        self.base = torch.cat([bases[i] for i in keep_index]) if keep_index else self.base[:0]
        self.task_vectors = (
            torch.cat([pieces[i] for i in keep_index], dim=1) if keep_index else self.task_vectors[:, :0]
        )
        self.group_of_tensor = self.group_of_tensor[keep_index]

    def effective_coefficients(self) -> Tensor:
        """The coefficients as applied, (K, groups): clamped to ``clamp_range`` ([0, 1]) when clamping is on."""
        return self.coefficients.clamp(*self.clamp_range) if self.clamp else self.coefficients

    def forward(self) -> Dict[str, Tensor]:
        """Merged tensors by name: ``theta_pre[p] + tau[:, p]^T c(lambda)[:, g(p)]`` for each tensor p.

        One fused multiply-add (``addmv``) per tensor on views of the flat buffers: no (K, N)
        temporary in the forward or the backward (the gradient of a coefficient is one dot product),
        which measured 7x faster on the CPU than one elementwise product over the whole (K, N) buffer.
        """
        per_tensor = self.effective_coefficients().index_select(1, self.group_of_tensor).to(self.base.dtype)
        bases = self.base.split(self.numels)
        vectors = self.task_vectors.split(self.numels, dim=1)
        merged = {
            name: torch.addmv(base, vector.t().to(base.dtype), per_tensor[:, i]).view(shape)
            for i, (name, base, vector, shape) in enumerate(zip(self.names, bases, vectors, self.shapes))
        }
        sizes = [math.prod(shape) for shape in self._unchanged_shapes]
        for name, piece, shape in zip(self._unchanged_names, self.unchanged.split(sizes), self._unchanged_shapes):
            merged[name] = piece.view(shape)
        return merged

    @torch.no_grad()
    def load_into(self, module: nn.Module) -> nn.Module:
        """Write the current merged weights into ``module``'s parameters (in place)."""
        merged = self.forward()
        params = dict(module.named_parameters())
        for name, value in merged.items():
            params[name].data.copy_(value.to(params[name].dtype))
        return module

    def groups_of(self, tensor_names: Sequence[str]) -> List[int]:
        """The coefficient columns of the given tensors."""
        return sorted(self.group_names.index(n) for n in tensor_names)
