#!/usr/bin/env python
"""`python -m fusion_bench_tinting.comparison.plot_coefficients`
(installed as `fusion-bench-tinting-plot-coefficients`), kept here for the repository's commands."""

import sys

from fusion_bench_tinting.comparison.plot_coefficients import main

if __name__ == "__main__":
    sys.exit(main())
