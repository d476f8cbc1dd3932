"""Tokenized adaptation inputs of the sequence-classification family, and the check that they fit the encoder."""

from __future__ import annotations

from typing import Dict, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from ..core.data import pin_if_useful
from ..core.errors import TintingConfigError


class TokenInputs:
    """Tokenized inputs of one task: each column (``input_ids``, ``attention_mask``, ...) in one
    right-padded (N, max_length) tensor; every batch is cut to its own longest sequence, so padding
    costs no more than per-batch padding would. Lengths stay on the CPU: cutting needs no host sync."""

    KIND = "tokens"

    def __init__(self, columns: Mapping[str, Tensor], lengths: Tensor):
        self.columns = dict(columns)
        self.lengths = lengths.cpu()

    def tensors(self) -> Dict[str, Tensor]:
        return {"lengths": self.lengths, **{f"column.{k}": v for k, v in self.columns.items()}}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "TokenInputs":
        columns = {k[len("column.") :]: v for k, v in tensors.items() if k.startswith("column.")}
        return cls(columns, tensors["lengths"])

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int) -> "TokenInputs":
        """From tokenized rows (lists of ids, possibly already padded: the attention mask says how long)."""
        if not rows:
            raise ValueError("no tokenized rows")
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows[0]]
        if "input_ids" not in names:
            raise ValueError(f"tokenized rows need `input_ids`; got columns {sorted(rows[0])}")
        lengths = torch.tensor(
            [int(sum(r["attention_mask"])) if "attention_mask" in r else len(r["input_ids"]) for r in rows]
        )
        width = int(lengths.max())
        columns = {}
        for name in names:
            fill = pad_token_id if name == "input_ids" else 0
            column = torch.full((len(rows), width), fill, dtype=torch.long)
            for i, (row, length) in enumerate(zip(rows, lengths.tolist())):
                column[i, :length] = torch.as_tensor(list(row[name])[:length], dtype=torch.long)
            columns[name] = column
        if "attention_mask" not in columns:
            columns["attention_mask"] = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return cls(columns, lengths)

    def __len__(self) -> int:
        return self.lengths.numel()

    @property
    def nbytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in self.columns.values())

    def to(self, device: torch.device) -> "TokenInputs":
        return TokenInputs({k: pin_if_useful(v.to(device)) for k, v in self.columns.items()}, self.lengths)

    def _cut(self, rows: Union[Tensor, slice], width: int, device: torch.device) -> Dict[str, Tensor]:
        return {k: v[rows, :width].to(device, non_blocking=True) for k, v in self.columns.items()}

    def gather(self, index: Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
        width = int(self.lengths[index.cpu()].max())  # CPU tensor: no device sync
        rows = index.to(next(iter(self.columns.values())).device, non_blocking=True)
        return self._cut(rows, width, device)

    def batches(
        self, batch_size: int, device: torch.device, dtype: Optional[torch.dtype] = None
    ) -> Iterator[Dict[str, Tensor]]:
        for start in range(0, len(self), batch_size):
            rows = slice(start, start + batch_size)
            yield self._cut(rows, int(self.lengths[rows].max()), device)


def check_token_ids(task: str, input_ids: Tensor, vocabulary: int, positions: Optional[int], source: str) -> None:
    """Token ids inside the encoder's embedding table and sequences no longer than its position table:
    otherwise the teacher pass fails with ``index out of range in self`` and names nothing."""
    if input_ids.numel() == 0:
        return
    high = int(input_ids.max())
    if high >= vocabulary or int(input_ids.min()) < 0:
        raise TintingConfigError(
            f"The test set of task {task!r} ({source}) has token ids up to {high}, but the model's vocabulary has "
            f"{vocabulary} tokens: the data was tokenized with another tokenizer than the model pool's."
        )
    if positions is not None and input_ids.shape[-1] > positions:
        raise TintingConfigError(
            f"The test set of task {task!r} ({source}) has sequences of {input_ids.shape[-1]} tokens, but the model "
            f"reads at most {positions}: tokenize it with truncation to the model's maximum length."
        )
