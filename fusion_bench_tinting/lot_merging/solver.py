"""LOT Merging's statistics and closed-form solve.

For each solvable layer and task k, one pass of expert k over a few of task k's unlabelled inputs
gives ``G_k = X_k^T X_k`` (the layer's input rows, see :mod:`.layers`); only running sums are kept,
never the activations. With ``T_k`` the expert's task vector for the layer (packed as (P, out, m)):

    T* = (sum_k T_k G_k) (sum_k G_k + lambda I)^-1,      lambda = ridge * mean(diag(sum_k G_k))

the minimiser of ``sum_k ||X_k (T - T_k)^T||^2`` plus a relative ridge that makes every system
solvable (``ridge=0``: the Moore-Penrose pseudo-inverse, the paper's Eq. 9). Tensors without a closed
form (embeddings, ...) take ``fallback_scale * sum_k tau_k`` (the mean of the task vectors by default,
which is also what the closed form gives when every task has the same statistics).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import torch
from fusion_bench.utils.pylogger import get_rankzero_logger
from torch import Tensor, nn

from .layers import SolvableLayer, find_solvable_layers

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only


class LOTSolver:
    """Accumulates, task after task, what the closed form needs; ``task_vector()`` gives the merged one.

    Memory: per solved layer one (P, m, m) sum of Gram matrices and one (P, out, m) numerator (in
    ``statistics_dtype``), plus one running sum of all task vectors for the fallback.
    """

    def __init__(
        self,
        encoder: nn.Module,
        merged_names: Sequence[str],
        *,
        ridge: float = 1e-4,
        fallback_scale: Optional[float] = None,
        statistics_dtype: torch.dtype = torch.float64,
        device: Optional[torch.device] = None,
    ):
        if ridge < 0:
            raise ValueError(f"ridge={ridge}: must be >= 0")
        self.merged_names = list(merged_names)
        self.layers: List[SolvableLayer] = find_solvable_layers(encoder, self.merged_names)
        #: module name -> indices of its layers (an attention module owns two: in- and out-projection)
        self._layers_of_module: Dict[str, List[int]] = {}
        for index, layer in enumerate(self.layers):
            self._layers_of_module.setdefault(layer.module_name, []).append(index)
        self.ridge = float(ridge)
        self.fallback_scale = fallback_scale
        self.dtype = statistics_dtype
        self.device = device or torch.device("cpu")
        self.num_tasks = 0
        self._gram_sum: Dict[int, Tensor] = {}
        self._numerator: Dict[int, Tensor] = {}
        self._vector_sum: Dict[str, Tensor] = {}

    @property
    def solved_names(self) -> List[str]:
        return [n for layer in self.layers for n in layer.parameter_names]

    # ----- statistics ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _hooks(self, expert: nn.Module, grams: Dict[int, Tensor], mask_box: List[Optional[Tensor]]) -> Iterator[None]:
        handles = []
        for module_name, indices in self._layers_of_module.items():
            module = expert.get_submodule(module_name) if module_name else expert

            def hook(module, args, kwargs, indices=indices):
                for index in indices:
                    rows = self.layers[index].rows(module, args, kwargs, mask_box[0])
                    if rows is None:
                        continue
                    rows = rows.unsqueeze(1) if rows.dim() == 2 else rows  # (n, P, m)
                    gram = torch.einsum("npi,npj->pij", rows, rows).to(self.dtype)
                    grams[index] = gram if index not in grams else grams[index] + gram

            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def add_task(
        self,
        pretrained: Mapping[str, Tensor],
        expert: nn.Module,
        batches: Iterable,
        forward: Callable[[object], object],
        token_mask: Callable[[object], Optional[Tensor]] = lambda batch: None,
    ) -> None:
        """Run ``forward`` over ``batches`` with ``expert``'s layers observed, then fold its statistics
        and task vector (``expert - pretrained``) into the sums. ``token_mask(batch)`` gives a
        (batch, length) mask of real tokens for padded text, or None."""
        grams: Dict[int, Tensor] = {}
        mask_box: List[Optional[Tensor]] = [None]
        with self._hooks(expert, grams, mask_box):
            for batch in batches:
                mask_box[0] = token_mask(batch)
                forward(batch)
        expert_params = dict(expert.named_parameters())
        vectors = {
            n: expert_params[n].detach().float() - pretrained[n].detach().float().to(expert_params[n].device)
            for n in self.merged_names
        }
        for name, vector in vectors.items():
            vector = vector.to(self.device)
            self._vector_sum[name] = vector if name not in self._vector_sum else self._vector_sum[name] + vector
        for index, gram in grams.items():
            gram = gram.to(self.device)
            packed = self.layers[index].pack(vectors).to(device=self.device, dtype=self.dtype)
            numerator = packed @ gram
            if index in self._gram_sum:
                self._gram_sum[index] += gram
                self._numerator[index] += numerator
            else:
                self._gram_sum[index], self._numerator[index] = gram, numerator
        self.num_tasks += 1

    # ----- solve -----------------------------------------------------------------------------
    def _solve_layer(self, index: int) -> Tensor:
        gram, numerator = self._gram_sum[index], self._numerator[index]
        if self.ridge == 0:
            return numerator @ torch.linalg.pinv(gram, hermitian=True)
        diagonal = gram.diagonal(dim1=-2, dim2=-1)
        scale = diagonal.mean(dim=-1, keepdim=True).clamp_min(torch.finfo(gram.dtype).tiny)
        regularised = gram + torch.diag_embed(self.ridge * scale.expand_as(diagonal))
        # (A X^T = N^T with A symmetric) <=> X = N A^-1
        return torch.linalg.solve(regularised, numerator.transpose(-1, -2)).transpose(-1, -2)

    @torch.no_grad()
    def task_vector(self) -> Dict[str, Tensor]:
        """The merged task vector of every merged tensor (float32): closed form where a layer saw
        inputs, ``fallback_scale * sum_k tau_k`` elsewhere."""
        if self.num_tasks == 0:
            raise RuntimeError("LOT Merging needs at least one task's statistics")
        scale = 1.0 / self.num_tasks if self.fallback_scale is None else float(self.fallback_scale)
        merged = {name: scale * vector for name, vector in self._vector_sum.items()}
        unseen = []
        for index, layer in enumerate(self.layers):
            if index not in self._gram_sum:
                unseen.append(layer.module_name or "<root>")
                continue
            for name, value in layer.unpack(self._solve_layer(index)).items():
                merged[name] = value.float()
        if unseen:
            log.warning(
                "LOT Merging: %d layer(s) never received inputs and use the fallback, e.g. %s", len(unseen), unseen[:3]
            )
        self.unseen_layers = unseen
        return merged

    def summary(self) -> Dict[str, int]:
        solved = [layer for i, layer in enumerate(self.layers) if i in self._gram_sum]
        solved_names = {n for layer in solved for n in layer.parameter_names}
        return {
            "tensors_closed_form": len(solved_names),
            "tensors_fallback": len([n for n in self.merged_names if n not in solved_names]),
            "layers_closed_form": len(solved),
        }
