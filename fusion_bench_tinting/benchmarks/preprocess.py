"""How much of the one preprocessing pass runs in the main process, which all data-loading workers feed.

The pass decodes and resizes every test image (in the workers) and keeps it as ``input_dtype``. Converting a
batch to that dtype (uint8: back to the 8-bit grid) in the main process costs about as much as decoding it, so
with N workers the main process, not the workers, bounds the pass. This script measures, in one run on
synthetic JPEGs through CLIP's image processor, the main process's CPU time per image and the images/s of:

- baseline: workers stack float32 batches, the main process converts them;
- ours: ``cache_inputs`` (workers convert, the main process concatenates).

    python -m fusion_bench_tinting.benchmarks.preprocess --images 1024 --workers 1 --dtype uint8
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from transformers import CLIPImageProcessor

from fusion_bench_tinting.core.data import cache_inputs, to_uint8_grid
from fusion_bench_tinting.testing.speed_suite import synthetic_jpeg


class SyntheticJpegs(Dataset):
    """``--images`` random JPEGs (320 x 240, as the speed suite's) decoded and preprocessed per item."""

    def __init__(self, count: int, processor):
        rng = np.random.default_rng(0)
        self.processor = processor
        self.jpegs = [synthetic_jpeg(rng, 320, 240) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, index: int):
        image = Image.open(io.BytesIO(self.jpegs[index])).convert("RGB")
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0], 0


def _stack(batch):
    return torch.stack([item[0] for item in batch])


def baseline(dataset, batch_size, workers, dtype, mean, std):
    chunks = []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_stack):
        chunks.append(to_uint8_grid(batch, mean, std) if dtype == torch.uint8 else batch.to(dtype))
    return torch.cat(chunks)


def ours(dataset, batch_size, workers, dtype, mean, std):
    normalization = (mean.tolist(), std.tolist()) if dtype == torch.uint8 else None
    return cache_inputs(
        dataset, batch_size=batch_size, num_workers=workers, dtype=dtype, desc="ours", normalization=normalization
    ).tensor


def measure(run, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = run(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype", choices=["uint8", "float16"], default="uint8")
    args = parser.parse_args()
    processor = CLIPImageProcessor()  # 224 x 224, CLIP's mean and std
    dataset = SyntheticJpegs(args.images, processor)
    dtype = getattr(torch, args.dtype)
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    rows = []
    for name, run in (("baseline: convert in the main process", baseline), ("ours: convert in the workers", ours)):
        result, wall, cpu = measure(run, dataset, args.batch_size, args.workers, dtype, mean, std)
        rows.append((name, wall, cpu, result))
    if not torch.equal(rows[0][3], rows[1][3]):
        raise SystemExit("the two ways cached different tensors")
    print(
        f"{args.images} JPEGs 320x240 -> 224x224 {args.dtype}, {args.workers} worker(s), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'':40s} {'wall s':>8s} {'images/s':>9s} {'main-process CPU ms/image':>26s}")
    for name, wall, cpu, _ in rows:
        print(f"{name:40s} {wall:8.2f} {args.images / wall:9.0f} {1e3 * cpu / args.images:26.3f}")
    print(f"main-process CPU per image, baseline / ours: {rows[0][2] / rows[1][2]:.1f}x")


if __name__ == "__main__":
    main()
