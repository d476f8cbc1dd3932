"""``python -m fusion_bench_tinting.upstream DIR``: write the methods as a FusionBench source tree."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .export import ExportError, export


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fusion-bench-tinting-export-upstream",
        description="Write Model Tinting, Model Tinting++ and LOT Merging as a change to FusionBench's source tree "
        "(method package, configs, task-aware CLIP task pool, docs page, and CHANGES.diff).",
    )
    parser.add_argument("out", type=Path, help="folder to write (FusionBench's repository layout)")
    args = parser.parse_args(argv)
    try:
        files = export(args.out)
    except ExportError as error:
        print(f"export_upstream: {error}", file=sys.stderr)
        return 2
    print(
        f"Wrote {len(files)} files under {args.out} (review {args.out / 'CHANGES.diff'} for FusionBench's own files)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
