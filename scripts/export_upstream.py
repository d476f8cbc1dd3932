#!/usr/bin/env python
"""`python -m fusion_bench_tinting.upstream DIR` (installed as `fusion-bench-tinting-export-upstream`),
kept here for the repository's commands."""

import sys

from fusion_bench_tinting.upstream.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
