#!/usr/bin/env python
"""`python -m fusion_bench_tinting.offline` (installed as `fusion-bench-tinting-build-minilm-text`),
kept here for the repository's commands."""

import sys

from fusion_bench_tinting.offline.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
