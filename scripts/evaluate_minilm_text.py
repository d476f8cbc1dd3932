#!/usr/bin/env python
"""Evaluate the individual models, task arithmetic, an AdaMerging-style entropy baseline, Model Tinting and
Model Tinting++ on the offline suite `minilm_text`, each through the `fusion_bench` CLI, and print one
Markdown table (per-task score and average).

    python scripts/build_minilm_text.py
    python scripts/evaluate_minilm_text.py [--max-steps 200] [--out outputs/minilm_text_eval]

The entropy baseline is our method with AdaMerging's objective (entropy of the merged model's
predictions, coefficients only): FusionBench's AdaMerging has no sequence-classification variant besides
GPT-2's. Every run writes its report under --out; runs already there are reused.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROWS = {
    "individual": ["method=individual"],
    "task_arithmetic": ["method=task_arithmetic"],
    "entropy_coefficients": ["method=model_tinting", "method.loss=entropy", "method.train_tinted_layer=false"],
    "model_tinting": ["method=model_tinting"],
    "model_tinting_plusplus": ["method=model_tinting_plusplus"],
}
ADAPTIVE = {"entropy_coefficients", "model_tinting", "model_tinting_plusplus"}


def run(name: str, overrides, out: Path, extra) -> dict:
    log_dir = out / name
    report = log_dir / "program_report.json"
    if not report.exists():
        command = ["fusion_bench", *overrides, "modelpool=minilm_text", "taskpool=minilm_text",
                   f"path.log_dir={log_dir}", "print_config=false", *extra]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/minilm_text_eval")
    parser.add_argument("--max-steps", type=int, default=None, help="adaptation iterations (default: the method's, 1000)")
    parser.add_argument("overrides", nargs="*", help="extra fusion_bench overrides, e.g. fabric.accelerator=cpu")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reports = {}
    for name, overrides in ROWS.items():
        extra = list(args.overrides)
        if name in ADAPTIVE and args.max_steps is not None:
            extra.append(f"method.max_steps={args.max_steps}")
        reports[name] = run(name, overrides, out, extra)
    tasks = [t for t, v in reports["individual"].items() if isinstance(v, dict) and "score" in v]
    lines = ["| method | " + " | ".join(tasks) + " | average | adaptation (s) |", "|---" * (len(tasks) + 3) + "|"]
    for name, report in reports.items():
        cells = [f"{100 * report[t]['score']:.1f}" for t in tasks]
        seconds = report.get("adaptation", {}).get("adaptation_time_s", "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * report['average']['score']:.1f} | {seconds} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
