"""``fusion-bench-tinting-compare`` / ``python scripts/compare.py``: tinting beside FusionBench's baselines.

    python scripts/compare.py --suite clip-vit-base-patch32_TA8 --out comparisons/b32_ta8
    python scripts/compare.py --suite minilm_text --out docs/minilm_text --analyses all -- fabric.accelerator=cpu
    python scripts/compare.py --suite minilm_text --out both --methods emr_merging,model_tinting \
        --protocols transductive,inductive -- fabric.accelerator=cpu
    python scripts/compare.py --suite minilm_text --out levers --methods model_tinting,mt_merged_pooler \
        --variant mt_merged_pooler=model_tinting --set mt_merged_pooler:method.head_projection=merged --seeds 42,1,2

Each method runs through the ``fusion_bench`` CLI on the same model pool and task pool; finished runs
are skipped on the next call; a failing method is marked failed with its reason while the others go on.
With ``--seeds``, every method that draws at random runs once per seed and the tables give the mean and
standard deviation over seeds. Output folder: ``comparison.md``, ``comparison.csv``, ``comparison.json``,
``radar.png``, ``bars.png``
(and heat maps for the sparsity analysis), plus ``runs/<method>/`` with every run's log folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

from . import analyses as analysis
from .methods import (
    DEFAULT_METHODS,
    INDUCTIVE_SUFFIX,
    METHODS,
    PROTOCOLS,
    MethodSpec,
    family_of,
    inductive_twin,
    register_variant,
)
from .plots import bar_chart, best_baseline, gap_chart, radar_chart
from .runner import RunResult, Suite, composed_config, run_method, seeds_for
from .tables import build_rows, calibration_table, csv_table, markdown_table, published_for


def parse_arguments(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command's arguments, checked: a bad one ends the command with argparse's one-line error."""
    parser = _parser()
    args = parser.parse_args(argv)
    _register_variants(parser, args)
    _check_arguments(parser, args)
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-bench-tinting-compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", help="suite name: sets --modelpool and --taskpool to it")
    parser.add_argument("--modelpool", help="model pool config name (default: the suite)")
    parser.add_argument("--taskpool", help="task pool config name (default: the suite)")
    parser.add_argument("--config-dir", action="append", default=[], help="extra Hydra config folder (repeatable)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated, from {sorted(METHODS)}")
    parser.add_argument("--out", required=True, help="output folder (re-running it resumes)")
    parser.add_argument("--analyses", default="", help=f"comma-separated from {list(analysis.ANALYSES)}, or 'all'")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD:OVERRIDE",
        help="an override for one method only, e.g. adamerging:method.max_steps=100 (repeatable)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=METHOD",
        help="an extra row NAME running METHOD with the --set overrides of NAME (repeatable)",
    )
    parser.add_argument(
        "--seeds",
        default="",
        help="comma-separated seeds, e.g. 42,1,2: methods that draw at "
        "random run once per seed; tables show mean and standard deviation",
    )
    parser.add_argument(
        "--protocols",
        default="transductive",
        help="comma-separated from transductive (adapt on the test inputs, as the paper) and inductive "
        "(adapt on the pool's val inputs, score on its test inputs): each adaptive method of ours runs "
        "under each; data-free methods once",
    )
    parser.add_argument(
        "--only",
        action="store_true",
        help="table only the --methods rows (by default the finished "
        "rows of an earlier table in --out stay in it, and new rows are added or updated)",
    )
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="start no run: tabulate the finished runs in "
        "--out (a method's missing seeds are named in the table, a method with none is marked)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed to each method")
    parser.add_argument("overrides", nargs="*", help="fusion_bench overrides for every run (after --)")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Seeds, methods, analyses and protocols parsed and checked in place."""
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 42,1,2")
    if not (args.suite or (args.modelpool and args.taskpool)):
        parser.error("give --suite, or both --modelpool and --taskpool")
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    chosen = list(analysis.ANALYSES) if args.analyses == "all" else [a for a in args.analyses.split(",") if a]
    bad = [a for a in chosen if a not in analysis.ANALYSES]
    if bad:
        parser.error(f"unknown analyses {bad}; choose from {list(analysis.ANALYSES)}")
    args.analyses = chosen
    args.protocols = [p for p in args.protocols.split(",") if p]
    if not args.protocols or set(args.protocols) - set(PROTOCOLS):
        parser.error(f"--protocols {','.join(args.protocols)!r}: comma-separated from {list(PROTOCOLS)}")


def rows_under_protocols(methods: List[str], protocols: List[str], per_method: Dict[str, List[str]]) -> List[str]:
    """The comparison's rows: every method under each protocol it can run (``<name>@inductive`` adapting on the
    pool's val inputs, with ``name``'s own overrides added to ``per_method``), data-free methods once."""
    rows = []
    for name in methods:
        twin = inductive_twin(name) if "inductive" in protocols else None
        if "transductive" in protocols or twin is None:
            rows.append(name)
        if twin is not None:
            per_method[twin] = [*per_method.get(name, []), f"method.adaptation_data={PROTOCOLS['inductive']}"]
            rows.append(twin)
    return rows


def _register_variants(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    overrides: Dict[str, List[str]] = {}
    for item in args.set:
        method, _, override = item.partition(":")
        overrides.setdefault(method, []).append(override)
    for item in args.variant:
        name, _, base = item.partition("=")
        if not name or not base:
            parser.error(f"--variant {item!r}: write NAME=METHOD")
        try:
            register_variant(name, base, overrides.get(name, []))
        except ValueError as error:
            parser.error(str(error))


def spec_record(name: str) -> Dict:
    """What a later call needs to show row ``name`` again without re-declaring it (a variant's label, its kind)."""
    spec = asdict(METHODS[name])
    spec.pop("overrides")
    return spec


def earlier_rows(out: Path, family: str, suite: Suite, extra: List[str], current: set) -> Dict[str, List[RunResult]]:
    """The rows of the table already in ``out`` that this call does not run: their finished runs, read again
    from ``out/runs`` (nothing is started), so that adding a row to a study keeps the others."""
    saved = out / "comparison.json"
    if not saved.exists():
        return {}
    earlier = json.loads(saved.read_text())
    rows: Dict[str, List[RunResult]] = {}
    for name, group in earlier.get("runs", {}).items():
        if name in current:
            continue
        if name not in METHODS:  # a variant declared by an earlier call
            record = earlier.get("methods", {}).get(name)
            if record is None:
                continue
            METHODS[name] = MethodSpec(overrides={"*": []}, **record)  # shown again, never run: no overrides needed
        seeds = [run.get("seed") for run in group] or [None]
        rows[name] = [run_method(name, family, suite, out, extra, [], None, seed=seed, start=False) for seed in seeds]
    return rows


def compare(args: argparse.Namespace) -> Dict:
    """Run (or reuse) every requested row, then write the tables, charts and ``comparison.json`` to ``args.out``."""
    suite = Suite(args.modelpool or args.suite, args.taskpool or args.suite, list(args.config_dir))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    family = family_of(composed_config(suite)["modelpool"]["_target_"])
    extra = list(args.overrides)
    if {"discrepancy", "loss_correlation"} & set(args.analyses):
        extra.append("++taskpool.save_predictions=true")
    runs = _run_rows(args, suite, family, out, extra)
    if not args.only:
        runs = {**earlier_rows(out, family, suite, extra, set(runs)), **runs}
    found = _analyses(args.analyses, {name: group[0] for name, group in runs.items()}, out)
    tasks, rows = build_rows(list(runs.values()))
    title = f"{suite.modelpool} ({family})"
    markdown = _markdown(title, runs, tasks, rows, published_for(suite.modelpool), found)
    (out / "comparison.md").write_text(markdown)
    (out / "comparison.csv").write_text(csv_table(tasks, rows))
    _charts(tasks, rows, out, title)
    everything = _record(args, suite, family, runs, tasks, rows, found)
    (out / "comparison.json").write_text(json.dumps(everything, indent=2, default=str))
    print(markdown)
    return everything


def _run_rows(
    args: argparse.Namespace, suite: Suite, family: str, out: Path, extra: List[str]
) -> Dict[str, List[RunResult]]:
    """Each requested row under each protocol, once per seed (finished runs are reused)."""
    per_method: Dict[str, List[str]] = {}
    for item in args.set:
        method, _, override = item.partition(":")
        per_method.setdefault(method, []).append(override)
    runs: Dict[str, List[RunResult]] = {}
    for name in rows_under_protocols(args.methods.split(","), args.protocols, per_method):
        for seed in seeds_for(name, args.seeds):
            which = name if seed is None else f"{name} (seed {seed})"
            print(f"[compare] {which} ...", flush=True)
            result = run_method(
                name,
                family,
                suite,
                out,
                extra,
                per_method.get(name, []),
                args.timeout,
                seed=seed,
                start=not args.reuse_only,
            )
            runs.setdefault(name, []).append(result)
            print(f"[compare] {which}: {result.status} {result.reason}", flush=True)
    return runs


def _analyses(requested: List[str], results: Dict[str, RunResult], out: Path) -> Dict[str, dict]:
    """The requested analyses of each row's first seed."""
    found: Dict[str, dict] = {}
    if "sparsity" in requested:
        found["sparsity"] = analysis.sparsity(results, out)
    if "discrepancy" in requested:
        found["discrepancy"] = analysis.discrepancy(results)
    if "loss_correlation" in requested:
        found["loss_correlation"] = analysis.loss_correlation(results)
    return found


def _markdown(title: str, runs, tasks: List[str], rows: List[dict], published: Dict, found: Dict[str, dict]) -> str:
    """comparison.md: the scores, the protocol note when inductive rows are in, calibration and analyses."""
    markdown = f"## {title}\n\n" + markdown_table(tasks, rows, published)
    if any(name.endswith(INDUCTIVE_SUFFIX) for name in runs):
        markdown += (
            "\nRows marked *[inductive]* adapted on the model pool's `val` inputs (apart from the test inputs) "
            "and were scored on its test inputs: how the merge does on inputs it has not seen. The other "
            "adaptive rows adapted on the test inputs they were scored on (transductive, the paper's "
            "protocol).\n"
        )
    ece_tasks, ece_rows = build_rows(list(runs.values()), metric="ece")
    calibration = calibration_table(ece_tasks, ece_rows)
    if calibration:
        markdown += "\n### Calibration\n\n" + calibration
    if found:
        markdown += "\n" + analysis.markdown(found)
    return markdown


def _charts(tasks: List[str], rows: List[dict], out: Path, title: str) -> None:
    if tasks:
        radar_chart(tasks, rows, out / "radar.png", title)
        if best_baseline(tasks, rows) and any(METHODS[r["method"]].ours for r in rows):
            gap_chart(tasks, rows, out / "gap_to_best_baseline.png", title)
    bar_chart(rows, out / "bars.png", title)


def _record(args, suite: Suite, family: str, runs, tasks: List[str], rows: List[dict], found: Dict) -> Dict:
    """Everything the comparison saw, for comparison.json (a later call merges its rows from it)."""
    return {
        "suite": {
            "modelpool": suite.modelpool,
            "taskpool": suite.taskpool,
            "family": family,
            "config_dirs": suite.config_dirs,
        },
        "tasks": tasks,
        "rows": rows,
        "calibration_rows": build_rows(list(runs.values()), metric="ece")[1],
        "published": {k: {"value": v[0], "source": v[1]} for k, v in published_for(suite.modelpool).items()},
        "seeds": args.seeds,
        "methods": {name: spec_record(name) for name in runs},
        "protocols": args.protocols,
        "runs": {name: [_run_record(r) for r in group] for name, group in runs.items()},
        "analyses": found,
    }


def _run_record(result: RunResult) -> Dict:
    fields = ("seed", "status", "reason", "seconds", "command", "log_dir", "report")
    return {field: getattr(result, field) for field in fields}


def main(argv: Optional[List[str]] = None) -> int:
    compare(parse_arguments(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
