#!/usr/bin/env python
"""`python -m fusion_bench_tinting.testing` (installed as `fusion-bench-tinting-build-tiny-suites`),
kept here for the repository's commands."""

import sys

from fusion_bench_tinting.testing.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
