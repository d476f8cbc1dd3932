"""Unlabelled adaptation inputs, preprocessed once, and the batches drawn from them."""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


class TensorInputs:
    """Preprocessed inputs of one task stacked in one tensor (labels are dropped on purpose:
    test-time adaptation never sees them)."""

    def __init__(self, tensor: Tensor):
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()

    def to(self, device: torch.device) -> "TensorInputs":
        tensor = self.tensor.to(device)
        if tensor.device.type == "cpu" and torch.cuda.is_available():
            tensor = tensor.pin_memory()
        return TensorInputs(tensor)

    def gather(self, index: Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> Tensor:
        """Rows ``index`` on ``device`` (as ``dtype``); no host synchronisation."""
        rows = self.tensor.index_select(0, index.to(self.tensor.device, non_blocking=True))
        return rows.to(device=device, dtype=dtype or rows.dtype, non_blocking=True)

    def batches(self, batch_size: int, device: torch.device, dtype: Optional[torch.dtype] = None) -> Iterator[Tensor]:
        for start in range(0, len(self), batch_size):
            yield self.tensor[start : start + batch_size].to(device=device, dtype=dtype, non_blocking=True)


def _inputs_only(batch):
    inputs = [item[0] for item in batch]
    return torch.stack([torch.as_tensor(x) for x in inputs])


def cache_inputs(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    dtype: torch.dtype,
    desc: str,
) -> TensorInputs:
    """Run the dataset's preprocessing once over every sample and keep the input tensors."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_inputs_only)
    chunks = [batch.to(dtype) for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)]
    if not chunks:
        raise ValueError(f"{desc}: the dataset is empty")
    return TensorInputs(torch.cat(chunks))


class EpochSampler:
    """Random batches of one task: a fresh permutation each epoch, every batch of the same size
    (the last partial batch of an epoch is dropped, unless the task has fewer samples than a batch)."""

    def __init__(self, num_samples: int, batch_size: int, generator: torch.Generator):
        self.num_samples = num_samples
        self.batch_size = min(batch_size, num_samples)
        self.generator = generator
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next(self) -> Tensor:
        if self._cursor + self.batch_size > self._order.numel():
            self._order = torch.randperm(self.num_samples, generator=self.generator)
            self._cursor = 0
        batch = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return batch
