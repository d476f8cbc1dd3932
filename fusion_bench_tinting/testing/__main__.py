"""Build the tiny offline CLIP suites (transformers CLIP and open_clip, 4 synthetic tasks each).

    python -m fusion_bench_tinting.testing [--out .cache/tiny-suites]
    fusion_bench --config-dir .cache/tiny-suites/config method=model_tinting modelpool=tiny-clip_TA4

Everything is built locally (no model hub): models, datasets and Hydra configs. A second call with
the same settings reuses what exists.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fusion_bench_tinting.testing.tiny_suites import TinySuiteSpec, build_tiny_suites  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/tiny-suites", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=TinySuiteSpec.seed)
    args = parser.parse_args()
    suites = build_tiny_suites(args.out, TinySuiteSpec(seed=args.seed))
    config_dir = os.path.join(os.path.abspath(args.out), "config")
    for suite in suites:
        print(f"fusion_bench --config-dir {config_dir} method=model_tinting modelpool={suite} fabric.accelerator=cpu")


if __name__ == "__main__":
    main()
