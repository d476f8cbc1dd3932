#!/usr/bin/env python
"""`python -m fusion_bench_tinting.offline.lite0_images` (installed as `fusion-bench-tinting-build-lite0-images`),
kept here for the repository's commands."""

import sys

from fusion_bench_tinting.offline.lite0_images import main

if __name__ == "__main__":
    sys.exit(main())
