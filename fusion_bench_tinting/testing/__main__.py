"""Build the tiny offline CLIP suites (transformers CLIP and open_clip, 4 synthetic tasks each).

    python -m fusion_bench_tinting.testing [--out .cache/tiny-suites]
    fusion_bench --config-dir .cache/tiny-suites/config method=model_tinting modelpool=tiny-clip_TA4

Everything is built locally (no model hub): models, datasets and Hydra configs. A second call with
the same settings reuses what exists.

    python -m fusion_bench_tinting.testing --hub-cache .cache/hf
    HF_HOME=.cache/hf HF_HUB_OFFLINE=1 fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8

fills a Hugging Face cache with tiny stand-ins under the real model and dataset ids of FusionBench's
ViT-B/32 8-, 14- and 20-task suites instead (testing.hub_cache), so that the real suite names run offline.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fusion_bench_tinting.testing.tiny_suites import TinySuiteSpec, build_tiny_suites  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/tiny-suites", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=TinySuiteSpec.seed)
    parser.add_argument(
        "--hub-cache", metavar="HF_HOME", help="fill this Hugging Face cache folder instead (see above)"
    )
    args = parser.parse_args()
    if args.hub_cache:
        from fusion_bench_tinting.testing.hub_cache import fill_hub_cache

        tasks = fill_hub_cache(Path(args.hub_cache), seed=args.seed)
        print(f"{len(tasks)} tasks; run with HF_HOME={os.path.abspath(args.hub_cache)} HF_HUB_OFFLINE=1")
        return
    suites = build_tiny_suites(args.out, TinySuiteSpec(seed=args.seed))
    config_dir = os.path.join(os.path.abspath(args.out), "config")
    for suite in suites:
        print(f"fusion_bench --config-dir {config_dir} method=model_tinting modelpool={suite} fabric.accelerator=cpu")


if __name__ == "__main__":
    main()
