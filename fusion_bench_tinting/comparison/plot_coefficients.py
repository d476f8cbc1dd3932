"""Plot the coefficient trajectories of tinting runs from their TensorBoard events.

    python -m fusion_bench_tinting.comparison.plot_coefficients --out docs/minilm_levers/coefficients.png \
        own=docs/minilm_levers/runs/mt/seed_42 merged=docs/minilm_levers/runs/mt_pooler_merged/seed_42

Prints, per run and task, the first and last mean coefficient and the mean coefficient-gradient norm.
"""

import argparse
import json
import sys
from pathlib import Path

from fusion_bench_tinting.comparison.trajectories import plot_trajectories, read_scalars, summarise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=LOG_DIR", help="a run's log folder, with a label")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, _, folder = item.partition("=")
        runs[label] = read_scalars(Path(folder))
        if not runs[label]:
            parser.error(f"{folder}: no coefficients/ scalars in its TensorBoard events")
    plot_trajectories(runs, Path(args.out), args.title)
    for label, series in runs.items():
        tasks = sorted({tag.rsplit("/", 1)[-1] for tag in series if tag.startswith("coefficients/mean/")})
        print(label, json.dumps(summarise(series, tasks), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
