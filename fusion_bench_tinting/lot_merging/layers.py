"""The layers LOT Merging solves in closed form, and the input features each one sees.

LOT Merging (arXiv 2505.23859) picks, for every linear or normalisation layer, the merged task
vector that minimises the summed squared drift between each expert's output and the merged layer's
output on that expert's own input features. Everything is phrased as *one or more independent
least-squares problems* ``min_T sum_k || X_k (T - T_k)^T ||^2``:

- a linear map (``nn.Linear``, transformers' transposed ``Conv1D``, a non-overlapping patch
  ``Conv2d``, the fused q/k/v and output projections of ``nn.MultiheadAttention``): one problem whose
  rows are the layer's inputs, with a column of ones appended when the layer has a bias;
- a ``LayerNorm``: one tiny problem per feature j, whose rows are ``[x_hat_j, 1]`` (the normalised
  input and a one for the bias), which gives the closed form for scale and bias together.

A layer is identified by torch module types only, never by a model family's parameter names, so the
same code serves CLIP, OpenCLIP, RoBERTa, GPT-2, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: (module, positional args, keyword args, token mask) -> rows (n, m) of the problem, or None
RowsFn = Callable[[nn.Module, tuple, dict, Optional[Tensor]], Optional[Tensor]]


def _is_transposed_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): a linear layer whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def _is_patch_conv(module: nn.Module) -> bool:
    """A ``Conv2d`` that cuts the input into non-overlapping patches (ViT patch embedding): a linear map per patch."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and tuple(module.stride) == tuple(module.kernel_size)
        and tuple(module.dilation) == (1, 1)
        and all(p == 0 for p in module.padding)
        and module.padding_mode == "zeros"
    )


def _flatten_rows(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Token features (..., d) as rows (n, d); padding tokens dropped when a (batch, length) mask matches."""
    if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


def _with_ones(rows: Tensor, bias: bool) -> Tensor:
    rows = rows.float()
    return torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1) if bias else rows


def _self_attention_input(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> Optional[Tensor]:
    """The MHA's input when it is plain self-attention with a fused in-projection, else None."""
    query = args[0] if args else kwargs.get("query")
    key = args[1] if len(args) > 1 else kwargs.get("key")
    value = args[2] if len(args) > 2 else kwargs.get("value")
    plain = (
        module._qkv_same_embed_dim
        and module.in_proj_weight is not None
        and module.bias_k is None
        and not module.add_zero_attn
        and kwargs.get("key_padding_mask") is None
    )
    if not plain or query is None or key is not query or value is not query:
        return None
    return query


def _attention_context(module: nn.MultiheadAttention, x: Tensor, attn_mask: Optional[Tensor]) -> Tensor:
    """What ``out_proj`` receives (the heads' attention outputs, concatenated), recomputed from the
    MHA's input: PyTorch's MHA applies ``out_proj`` functionally, so no hook on it ever fires."""
    batch_first = getattr(module, "batch_first", False)
    if not batch_first:
        x = x.transpose(0, 1)
    batch, length, width = x.shape
    heads = module.num_heads
    qkv = F.linear(
        x.float(), module.in_proj_weight.float(), None if module.in_proj_bias is None else module.in_proj_bias.float()
    )
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    mask = None
    if attn_mask is not None:
        mask = attn_mask.bool().logical_not() if attn_mask.dtype == torch.bool else attn_mask.float()
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return context.transpose(1, 2).reshape(batch, length, width)


@dataclass
class SolvableLayer:
    """One layer solved in closed form: which parameters it owns and how its problem is laid out.

    ``pack`` turns the layer's (task-vector) tensors into a (P, out, m) stack, P independent problems
    of m inputs each; ``unpack`` is its inverse; ``rows`` gives the problem's input rows from a forward
    pre-hook's arguments (rows of shape (n, m), or (n, P, m) for per-feature problems).
    """

    module_name: str
    kind: str
    weight_name: str
    bias_name: Optional[str]
    rows: RowsFn
    shape: tuple

    @property
    def parameter_names(self) -> List[str]:
        return [self.weight_name] + ([self.bias_name] if self.bias_name else [])

    def pack(self, tensors: Mapping[str, Tensor]) -> Tensor:
        weight = tensors[self.weight_name].float()
        if self.kind == "layer_norm":
            columns = [weight.reshape(-1)] + ([tensors[self.bias_name].float().reshape(-1)] if self.bias_name else [])
            return torch.stack(columns, dim=-1).unsqueeze(1)  # (d, 1, 1 or 2)
        if self.kind == "conv1d":
            weight = weight.t()
        weight = weight.reshape(weight.shape[0], -1)  # (out, in); patch convs flatten (C, k, k)
        if self.bias_name:
            weight = torch.cat([weight, tensors[self.bias_name].float().reshape(-1, 1)], dim=1)
        return weight.unsqueeze(0)  # (1, out, in[+1])

    def unpack(self, stacked: Tensor) -> Dict[str, Tensor]:
        if self.kind == "layer_norm":
            flat = stacked.squeeze(1)
            out = {self.weight_name: flat[:, 0].reshape(self.shape)}
            if self.bias_name:
                out[self.bias_name] = flat[:, 1]
            return out
        matrix = stacked.squeeze(0)
        out = {}
        if self.bias_name:
            out[self.bias_name] = matrix[:, -1].contiguous()
            matrix = matrix[:, :-1]
        if self.kind == "conv1d":
            matrix = matrix.t()
        out[self.weight_name] = matrix.contiguous().reshape(self.shape)
        return out


def _linear_rows(bias: bool) -> RowsFn:
    def rows(module, args, kwargs, mask):
        return _with_ones(_flatten_rows(args[0], mask), bias)

    return rows


def _patch_rows(bias: bool) -> RowsFn:
    def rows(module, args, kwargs, mask):
        patches = F.unfold(args[0].float(), module.kernel_size, stride=module.stride)  # (B, C*k*k, L)
        return _with_ones(patches.transpose(1, 2).reshape(-1, patches.shape[1]), bias)

    return rows


def _mha_in_rows(bias: bool) -> RowsFn:
    def rows(module, args, kwargs, mask):
        x = _self_attention_input(module, args, kwargs)
        return None if x is None else _with_ones(x.reshape(-1, x.shape[-1]), bias)

    return rows


def _mha_out_rows(bias: bool) -> RowsFn:
    def rows(module, args, kwargs, mask):
        x = _self_attention_input(module, args, kwargs)
        if x is None:
            return None
        attn_mask = args[5] if len(args) > 5 else kwargs.get("attn_mask")
        context = _attention_context(module, x, attn_mask)
        return _with_ones(context.reshape(-1, context.shape[-1]), bias)

    return rows


def _layer_norm_rows(bias: bool) -> RowsFn:
    def rows(module, args, kwargs, mask):
        x = args[0].float()
        normalized = F.layer_norm(x, module.normalized_shape, eps=module.eps)
        normalized = _flatten_rows(normalized, mask)  # (n, d)
        columns = [normalized] + ([torch.ones_like(normalized)] if bias else [])
        return torch.stack(columns, dim=-1)  # (n, d, 1 or 2)

    return rows


def find_solvable_layers(encoder: nn.Module, merged_names: Sequence[str]) -> List[SolvableLayer]:
    """The encoder's layers with a closed form whose parameters are all merged; the rest of the merged
    tensors (embeddings, positional and class embeddings, ...) are left to the caller's fallback."""
    merged = set(merged_names)
    layers: List[SolvableLayer] = []

    def add(module_name, kind, weight, bias, rows_factory, shape):
        names = [weight] + ([bias] if bias else [])
        if all(n in merged for n in names):
            layers.append(SolvableLayer(module_name, kind, weight, bias, rows_factory(bias is not None), tuple(shape)))

    for name, module in encoder.named_modules():
        prefix = f"{name}." if name else ""
        has_bias = getattr(module, "bias", None) is not None
        bias_name = f"{prefix}bias" if has_bias else None
        if isinstance(module, nn.MultiheadAttention):
            if module._qkv_same_embed_dim and module.in_proj_weight is not None:
                in_bias = f"{prefix}in_proj_bias" if module.in_proj_bias is not None else None
                add(name, "linear", f"{prefix}in_proj_weight", in_bias, _mha_in_rows, module.in_proj_weight.shape)
                out_bias = f"{prefix}out_proj.bias" if module.out_proj.bias is not None else None
                add(name, "linear", f"{prefix}out_proj.weight", out_bias, _mha_out_rows, module.out_proj.weight.shape)
        elif isinstance(module, nn.Linear) and not _inside_attention(encoder, name):
            add(name, "linear", f"{prefix}weight", bias_name, _linear_rows, module.weight.shape)
        elif _is_transposed_conv1d(module):
            add(name, "conv1d", f"{prefix}weight", bias_name, _linear_rows, module.weight.shape)
        elif _is_patch_conv(module):
            add(name, "linear", f"{prefix}weight", bias_name, _patch_rows, module.weight.shape)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine and len(module.normalized_shape) == 1:
            add(name, "layer_norm", f"{prefix}weight", bias_name, _layer_norm_rows, module.weight.shape)
    return layers


def _inside_attention(encoder: nn.Module, module_name: str) -> bool:
    """``out_proj`` of an ``nn.MultiheadAttention`` (handled with its attention module)."""
    parent_name, _, leaf = module_name.rpartition(".")
    if leaf != "out_proj":
        return False
    parent = encoder.get_submodule(parent_name) if parent_name else encoder
    return isinstance(parent, nn.MultiheadAttention)
