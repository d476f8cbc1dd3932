"""Speed benchmark: FusionBench's layer-wise AdaMerging against Model Tinting and Model Tinting++ on one
locally built CLIP suite (real vision architecture, random weights, synthetic JPEG test sets), in one process.

    python -m fusion_bench_tinting.benchmarks --arch ViT-B-32 --tasks 8 --steps 20 --out docs/speed      # on a GPU
    python -m fusion_bench_tinting.benchmarks --arch ViT-B-32 --tasks 8 --steps 50 --precision bf16-mixed \
        --methods adamerging,model_tinting,model_tinting_compiled --out docs/speed             # the fast loop
    python -m fusion_bench_tinting.benchmarks --arch tiny --tasks 4 --steps 5 --images 64                # CPU smoke run

Prints ms per iteration (every task adapted once), adapted images/s, ms per image, the ratio against
AdaMerging per adapted image, the whole job's time (run + evaluation), peak GPU memory and where a step's
time goes; writes the table (Markdown) and the raw figures (JSON) to --out.
"""

import argparse
import os
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fusion_bench_tinting.benchmarks.speed import DEFAULT_METHODS, METHODS, markdown, run_benchmark, save  # noqa: E402
from fusion_bench_tinting.testing.speed_suite import ARCHITECTURES, SpeedSuiteSpec  # noqa: E402


def _images(value: str):
    return value if value == "real" else int(value)


def _options(pairs):
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--option {pair!r}: use KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", choices=sorted(ARCHITECTURES))
    parser.add_argument("--tasks", type=int, default=8, help="number of tasks (FusionBench's TA20 order)")
    parser.add_argument(
        "--images",
        type=_images,
        default=256,
        help="synthetic JPEG test images per task, or 'real' for the real test sets' sizes (about 87k for TA8)",
    )
    parser.add_argument("--steps", type=int, default=20, help="iterations of the longer of the two runs per method")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (*_compiled: compile_step, CUDA graphs on a GPU)",
    )
    parser.add_argument("--precision", default="32-true", help="Fabric precision for every method, e.g. bf16-mixed")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the *_compiled methods")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of our methods, e.g. task_vector_dtype=bfloat16 (repeatable; YAML values)",
    )
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="data-loading workers (AdaMerging's loader, our one preprocessing pass)",
    )
    parser.add_argument(
        "--root", default=None, help="where the suite is built (default: .cache/speed/<arch>_TA<tasks>)"
    )
    parser.add_argument("--out", default="speed-results", help="folder for the Markdown table and JSON")
    args = parser.parse_args()
    spec = SpeedSuiteSpec(architecture=args.arch, num_tasks=args.tasks, images_per_task=args.images)
    root = Path(args.root or f".cache/speed/{args.arch}_TA{args.tasks}")
    result = run_benchmark(
        spec,
        root=root,
        methods=args.methods.split(","),
        steps=args.steps,
        accelerator=args.accelerator,
        num_workers=args.num_workers,
        precision=args.precision,
        compile_backend=args.compile_backend,
        options=_options(args.option),
    )
    print(markdown(result))
    print(f"written: {save(result, Path(args.out))}")


if __name__ == "__main__":
    main()
