"""Unlabelled adaptation inputs, preprocessed once, and the batches drawn from them."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, Mapping, Optional, Protocol, Sequence, Tuple, Union

import torch
from lightning.fabric.utilities.data import suggested_max_num_workers
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .console import progress

log = logging.getLogger(__name__)


class AdaptationInputs(Protocol):
    """What the adaptation loop needs of a task's cached inputs."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def to(self, device: torch.device) -> "AdaptationInputs": ...

    def gather(self, index: Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> Any: ...

    def batches(self, batch_size: int, device: torch.device, dtype: Optional[torch.dtype] = None) -> Iterator[Any]: ...


def pin_if_useful(tensor: Tensor) -> Tensor:
    return tensor.pin_memory() if tensor.device.type == "cpu" and torch.cuda.is_available() else tensor


def gather_rows(tensor: Tensor, index: Tensor, device: torch.device) -> Tensor:
    """``tensor[index]`` on ``device`` without a host synchronisation. Rows of a host tensor bound for a
    GPU are gathered into pinned memory (PyTorch's caching host allocator, which keeps a block until the
    copy out of it has finished), so the copy is truly asynchronous; a copy out of pageable memory could
    wait for the stream."""
    index = index.to(tensor.device, non_blocking=True)
    if tensor.device.type == "cpu" and torch.device(device).type == "cuda":
        staged = torch.empty((index.numel(), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        return torch.index_select(tensor, 0, index, out=staged).to(device, non_blocking=True)
    return tensor.index_select(0, index).to(device, non_blocking=True)


class TensorInputs:
    """Preprocessed inputs of one task stacked in one tensor (labels are dropped on purpose:
    test-time adaptation never sees them)."""

    KIND = "tensor"

    def __init__(self, tensor: Tensor):
        self.tensor = tensor

    def tensors(self) -> Dict[str, Tensor]:
        """Everything it holds, as named tensors (for a safetensors file)."""
        return {"tensor": self.tensor}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "TensorInputs":
        return cls(tensors["tensor"])

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()

    def to(self, device: torch.device) -> "TensorInputs":
        return TensorInputs(pin_if_useful(self.tensor.to(device)))

    def gather(self, index: Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> Tensor:
        """Rows ``index`` on ``device`` (as ``dtype``); no host synchronisation."""
        rows = gather_rows(self.tensor, index, device)
        return rows if dtype is None else rows.to(dtype)

    def batches(self, batch_size: int, device: torch.device, dtype: Optional[torch.dtype] = None) -> Iterator[Tensor]:
        for start in range(0, len(self), batch_size):
            yield self.tensor[start : start + batch_size].to(device=device, dtype=dtype, non_blocking=True)


class Uint8ImageInputs(TensorInputs):
    """Preprocessed images kept on their 8-bit grid (uint8: a quarter of float32, half of float16) and
    normalised on the device they are gathered to. Exact for preprocessing that resizes and crops 8-bit
    pixels, then maps ``x / 255`` through ``(x - mean) / std`` (CLIP's and open_clip's)."""

    KIND = "uint8_image"

    def __init__(self, tensor: Tensor, mean: Tensor, std: Tensor):
        super().__init__(tensor)
        self.mean, self.std = mean.float().reshape(-1, 1, 1), std.float().reshape(-1, 1, 1)

    def tensors(self) -> Dict[str, Tensor]:
        return {"tensor": self.tensor, "mean": self.mean.flatten().clone(), "std": self.std.flatten().clone()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "Uint8ImageInputs":
        return cls(tensors["tensor"], tensors["mean"], tensors["std"])

    def to(self, device: torch.device) -> "Uint8ImageInputs":
        return Uint8ImageInputs(pin_if_useful(self.tensor.to(device)), self.mean, self.std)

    def _normalised(self, pixels: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
        return normalise_pixels(pixels, self.mean, self.std).to(dtype or torch.float32)

    def gather(self, index: Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> Tensor:
        return self._normalised(gather_rows(self.tensor, index, device), dtype)

    def batches(self, batch_size: int, device: torch.device, dtype: Optional[torch.dtype] = None) -> Iterator[Tensor]:
        for start in range(0, len(self), batch_size):
            yield self._normalised(self.tensor[start : start + batch_size].to(device, non_blocking=True), dtype)


def normalise_pixels(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """8-bit pixels (N x C x H x W) through ``x / 255`` and ``(x - mean) / std``, in float32 on their device."""
    mean, std = mean.float().reshape(-1, 1, 1).to(pixels.device), std.float().reshape(-1, 1, 1).to(pixels.device)
    return (pixels.float() / 255.0 - mean) / std


def to_uint8_grid(images: Tensor, mean: Tensor, std: Tensor, tolerance: float = 0.02) -> Optional[Tensor]:
    """``images`` (normalised, N x C x H x W) back as 8-bit pixels, or None when they are not on that grid
    (then storing them as uint8 would change them). ``tolerance`` is in pixel units (0..255).

    Image by image through two reused buffers: on a CPU this is about 2.5x faster than whole-batch
    temporaries, whose fresh memory costs more to fault in than the arithmetic."""
    scale, shift = (std.float() * 255.0).reshape(-1, 1, 1), (mean.float() * 255.0).reshape(-1, 1, 1)
    pixels = torch.empty(images.shape[1:], dtype=torch.float32)
    rounded = torch.empty_like(pixels)
    out = torch.empty(images.shape, dtype=torch.uint8)
    for image, target in zip(images, out):
        torch.addcmul(shift, image.float(), scale, out=pixels)  # x * std * 255 + mean * 255
        torch.round(pixels, out=rounded)
        low, high = torch.aminmax(rounded)
        if low < 0 or high > 255 or pixels.sub_(rounded).abs_().max() > tolerance:
            return None
        target.copy_(rounded)
    return out


class CachedDtypeCollate:
    """Stacks a batch's inputs and converts them to the cache's dtype (uint8 pixels when they are on the
    8-bit grid, else float16) inside the loader's worker: the main process, which N workers feed, then only
    concatenates, and a quarter (uint8) or half (float16) of float32's bytes crosses between processes."""

    def __init__(self, dtype: torch.dtype, mean: Optional[Tensor] = None, std: Optional[Tensor] = None):
        self.dtype, self.mean, self.std = dtype, mean, std

    def __call__(self, batch) -> Tensor:
        images = [torch.as_tensor(item[0]) for item in batch]
        shapes = sorted({tuple(image.shape) for image in images})
        if len(shapes) > 1:
            raise ValueError(
                f"images of different shapes after preprocessing ({', '.join(map(str, shapes[:3]))}): "
                "the pool's processor must resize and crop every image to one size"
            )
        images = torch.stack(images)
        if self.dtype != torch.uint8:
            return images.to(self.dtype)
        pixels = to_uint8_grid(images, self.mean, self.std)
        return pixels if pixels is not None else images.to(torch.float16)


#: below this many samples, starting data-loading workers costs more than decoding in the main process
SMALL_DATASET = 1024
MAX_AUTO_WORKERS = 8  # FusionBench's own default for its CLIP data loaders


def resolve_num_workers(num_workers: Union[int, str], num_samples: int) -> int:
    """``auto``: the main process for small datasets, else Lightning's suggestion for this node (one core left to
    the main process), at most 8: decoding and resizing JPEGs takes a few ms per image, so a single process would
    make the one preprocessing pass of a large suite take minutes. An integer is used as it is."""
    if num_workers != "auto":
        return int(num_workers)
    return 0 if num_samples < SMALL_DATASET else min(MAX_AUTO_WORKERS, suggested_max_num_workers(1))


def cache_inputs(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: Union[int, str],
    dtype: torch.dtype,
    desc: str,
    normalization: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
) -> TensorInputs:
    """Run the dataset's preprocessing once over every sample and keep the input tensors. With
    ``dtype=torch.uint8`` the images are kept on their 8-bit grid (``normalization`` = the preprocessing's
    mean and std); if they turn out not to be on it, float16 is kept instead, with a warning."""
    workers = resolve_num_workers(num_workers, len(dataset))
    quantize = dtype == torch.uint8
    if quantize and normalization is None:
        raise ValueError(f"{desc}: input_dtype=uint8 needs the preprocessing's mean and std")
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in normalization) if quantize else (None, None)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=CachedDtypeCollate(dtype, mean, std)
    )
    chunks = []
    for batch in progress(loader, desc=desc, nested=True):
        if quantize and batch.dtype != torch.uint8:  # this batch is off the 8-bit grid: all of it float16
            log.warning("%s: the preprocessed images are not on an 8-bit grid; caching them as float16.", desc)
            quantize, chunks = False, [normalise_pixels(c, mean, std).to(torch.float16) for c in chunks]
        elif not quantize and batch.dtype == torch.uint8:  # on the grid, after the fallback
            batch = normalise_pixels(batch, mean, std).to(torch.float16)
        chunks.append(batch)
    if not chunks:
        raise ValueError(f"{desc}: the dataset is empty")
    if quantize:
        return Uint8ImageInputs(torch.cat(chunks), mean, std)
    return TensorInputs(torch.cat(chunks))


class EpochSampler:
    """Random batches of one task: a fresh permutation each epoch, every batch of the same size
    (the last partial batch of an epoch is dropped, unless the task has fewer samples than a batch).
    ``indices``: the samples to draw from (default: all ``num_samples``)."""

    def __init__(self, num_samples: int, batch_size: int, generator: torch.Generator, indices: Optional[Tensor] = None):
        self.indices = indices
        self.num_samples = num_samples if indices is None else indices.numel()
        self.batch_size = min(batch_size, self.num_samples)
        self.generator = generator
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next(self) -> Tensor:
        if self._cursor + self.batch_size > self._order.numel():
            self._order = torch.randperm(self.num_samples, generator=self.generator)
            self._cursor = 0
        batch = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return batch if self.indices is None else self.indices[batch]

    def state_dict(self) -> dict:
        return {"order": self._order.clone(), "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self._order, self._cursor = state["order"].clone(), state["cursor"]
