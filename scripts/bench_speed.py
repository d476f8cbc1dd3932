#!/usr/bin/env python
"""`python -m fusion_bench_tinting.benchmarks` (installed as `fusion-bench-tinting-bench-speed`),
kept here for the repository's commands."""

import sys

from fusion_bench_tinting.benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
