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
from typing import Any, Callable, Sequence

from .core.evaluation import task_aware
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


def skip_printed_report(print_json: Callable[..., None]) -> Callable[..., None]:
    """``print_json`` that leaves out a report the task-aware task pool already printed as a table."""

    @functools.wraps(print_json)
    def wrapper(report: Any, *args: Any, **kwargs: Any) -> None:
        if report is not None and report is task_aware.last_printed_report:
            return
        print_json(report, *args, **kwargs)

    return wrapper


def quiet_evaluation(evaluate_merged_model: Callable[..., Any]) -> Callable[..., Any]:
    """FusionBench's evaluation of the merged model with its expected noise hidden and the task pool's bars
    drawn as the run's (:mod:`.quiet`)."""

    @functools.wraps(evaluate_merged_model)
    def wrapper(program: Any, taskpool: Any, *args: Any, **kwargs: Any) -> Any:
        with quiet_run(), bars_of(taskpool):
            return evaluate_merged_model(program, taskpool, *args, **kwargs)

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
