#!/usr/bin/env python
"""Plot the teacher agreement on held-out adaptation inputs (``select_on_holdout``) against the iteration, one
line per run, from the runs' ``program_report.json``; the selected iteration is marked.

    python scripts/plot_holdout_agreement.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the chart to write (.png)")
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="a legend label and a run's log folder")
    args = parser.parse_args(argv)
    figure, axes = plt.subplots(figsize=(7, 4))
    for spec in args.runs:
        label, folder = spec.split("=", 1)
        selection = json.loads((Path(folder) / "program_report.json").read_text())["adaptation"]["selection"]
        points = sorted((int(k), 100 * v) for k, v in selection["score_by_iteration"].items())
        line = axes.plot(*zip(*points), marker=".", label=label)[0]
        chosen = selection["selected_iteration"]
        axes.plot([chosen], [dict(points)[chosen]], "o", markersize=10, fillstyle="none", color=line.get_color())
    axes.set_xlabel("iteration")
    axes.set_ylabel("agreement with the teachers on held-out inputs (%)")
    axes.set_title("select_on_holdout=0.2 (circle: the iterate kept)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
