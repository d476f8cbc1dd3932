#!/usr/bin/env python
"""Run Model Tinting beside FusionBench's baselines on one suite and write tables, charts and JSON.

See `python scripts/compare.py --help` (also installed as `fusion-bench-tinting-compare`).
"""

import sys

from fusion_bench_tinting.comparison.cli import main

if __name__ == "__main__":
    sys.exit(main())
