"""The plugin's changes to what FusionBench's program prints, for runs of this package's methods only.

FusionBench (0.2.33) prints each object its program builds in a bordered panel with every argument (the
method's panel repeats the option list the config tree just showed) and, after evaluation, the whole
report as an indented listing, although the task-aware task pools have already printed it as a table.
Through FusionBench's own hook for the panels (``instantiate_utils.PRINT_FUNCTION_CALL_FUNC``) each panel
becomes one line naming what is built, the report listing is skipped when the table showed that very
report, and the evaluation prints as the method's run does (:mod:`.quiet`). Runs of other methods and
``FUSION_BENCH_TINTING_VERBOSE=1`` keep FusionBench's output as it is. docs/upstream.md proposes these as
FusionBench options.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, Optional, Sequence

from lightning.fabric.utilities.rank_zero import rank_zero_only

from .quiet import bars_of, quiet_run, verbose

#: the method configs of this package (``method=<name>`` on the command line)
OUR_METHODS = ("model_tinting", "model_tinting_plusplus", "lot_merging", "individual")
_METHOD_ARGUMENT = re.compile(r"^\+*method=(?P<name>[\w/.-]+)$")


def runs_our_method(argv: Sequence[str]) -> bool:
    for argument in argv[1:]:
        match = _METHOD_ARGUMENT.match(argument)
        if match and match.group("name").split("/")[-1] in OUR_METHODS:
            return True
    return False


def one_line_call(panel: Any) -> None:
    """Print FusionBench's "Instantiate by calling" panel as one line: the name of what is built."""
    code = getattr(getattr(panel, "renderable", None), "code", None)
    if not isinstance(code, str):
        from rich import print as rich_print

        rich_print(panel)
        return
    print(f"Instantiate {code.split('(', 1)[0].strip()}", flush=True)


@rank_zero_only
def print_report_table(report: Dict[str, Any]) -> None:
    """Print the per-task headline metric (``score`` where the task pool reports one, else accuracy)."""
    from rich.console import Console
    from rich.table import Table

    key = "score" if any(isinstance(v, dict) and "score" in v for v in report.values()) else "accuracy"
    method = report.get("adaptation", {}).get("method", "merged model")
    table = Table(title=f"{method}: {'score' if key == 'score' else 'accuracy'} per task (%)", min_width=48)
    table.add_column("task")
    if key == "score":
        table.add_column("metric", justify="left")
    table.add_column(key, justify="right")
    table.add_column("ECE", justify="right")  # expected calibration error, %, where reported

    def ece(result: Dict[str, Any]) -> str:
        return _percent(result["ece"]) if "ece" in result else ""

    for task, result in report.items():
        if isinstance(result, dict) and key in result and task != "average":
            metric = [result.get("metric", "")] if key == "score" else []
            table.add_row(task, *metric, _percent(result[key]), ece(result))
    average = report.get("average", {})
    if key in average:
        metric = [""] if key == "score" else []
        table.add_row("[bold]average[/bold]", *metric, f"[bold]{_percent(average[key])}[/bold]", ece(average))
    Console().print(table)


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


#: the report :func:`print_report_table` printed last (FusionBench's program need not list it again)
last_printed_report: Optional[Dict[str, Any]] = None


def skip_printed_report(print_json: Callable[..., None]) -> Callable[..., None]:
    """``print_json`` that leaves out a report already printed as a table."""

    @functools.wraps(print_json)
    def wrapper(report: Any, *args: Any, **kwargs: Any) -> None:
        if report is not None and report is last_printed_report:
            return
        print_json(report, *args, **kwargs)

    return wrapper


def quiet_evaluation(evaluate_merged_model: Callable[..., Any]) -> Callable[..., Any]:
    """FusionBench's evaluation of the merged model with its expected noise hidden, the task pool's bars drawn
    as the run's (:mod:`.quiet`) and the report printed as a per-task table."""

    @functools.wraps(evaluate_merged_model)
    def wrapper(program: Any, taskpool: Any, *args: Any, **kwargs: Any) -> Any:
        global last_printed_report
        with quiet_run(), bars_of(taskpool):
            report = evaluate_merged_model(program, taskpool, *args, **kwargs)
        if isinstance(report, dict) and isinstance(report.get("average"), dict):
            print_report_table(report)
            last_printed_report = report
        return report

    return wrapper


def install(argv: Sequence[str]) -> bool:
    """Make FusionBench's program output compact for a launch of one of our methods; True when done."""
    if verbose() or not runs_our_method(argv):
        return False
    from fusion_bench.programs import fabric_fusion_program
    from fusion_bench.utils import instantiate_utils

    if not hasattr(instantiate_utils, "PRINT_FUNCTION_CALL_FUNC") or not hasattr(fabric_fusion_program, "print_json"):
        return False  # another FusionBench version: leave its output alone
    instantiate_utils.PRINT_FUNCTION_CALL_FUNC = one_line_call
    if not hasattr(fabric_fusion_program.print_json, "__wrapped__"):
        fabric_fusion_program.print_json = skip_printed_report(fabric_fusion_program.print_json)
    program = fabric_fusion_program.FabricModelFusionProgram
    if not hasattr(program.evaluate_merged_model, "__wrapped__"):
        program.evaluate_merged_model = quiet_evaluation(program.evaluate_merged_model)
    return True
