#!/usr/bin/env python
"""`python -m fusion_bench_tinting.benchmarks.preprocess` (installed as `fusion-bench-tinting-bench-preprocess`),
kept here for the repository's commands."""

import sys

from fusion_bench_tinting.benchmarks.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
