"""What a run of the plugin's commands prints: one progress bar per phase, and nothing that is expected for
what the run does.

On a terminal a bar updates in place; in a log file (not a terminal) it writes one plain line about every
10 % of its phase and the bars nested inside a phase write nothing. During a run, :func:`quiet_run` hides
what is expected noise for it: FusionBench's "Instantiate by calling" panels and loading messages for the
objects the run builds itself, transformers' weight-loading bars, and the load reports the model family
declares expected (a CLIP vision tower loaded from a whole CLIP checkpoint leaves the text tower unused).
Any other warning still shows. ``FUSION_BENCH_TINTING_VERBOSE=1`` shows everything. The core (the upstream
contribution) prints FusionBench's way; these changes are the plugin's, and docs/upstream.md proposes them to
FusionBench.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

from lightning.fabric.utilities.rank_zero import rank_zero_only
from tqdm.auto import tqdm

from .core import console

VERBOSE_VARIABLE = "FUSION_BENCH_TINTING_VERBOSE"
#: a phase in a log file writes a line about every this fraction of its work
LINE_EVERY = 0.1
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: (key, status) rows of a transformers load report, e.g. ("text_model.x.weight", "UNEXPECTED")
ReportRows = List[Tuple[str, str]]
#: the weights of a whole CLIP checkpoint that ``CLIPVisionModel`` does not read
CLIP_PARTS_OUTSIDE_THE_VISION_TOWER = ("text_model.", "text_projection", "visual_projection", "logit_scale")


def expected_load_reports(family: Any) -> Callable[[str, ReportRows], bool]:
    """Which transformers load reports (``(key, status)`` rows for a source) a pool's model family expects, so
    the run need not show them: the family's own ``expected_load_report`` (the plugin's families), or for HF CLIP a
    vision tower read from a whole CLIP checkpoint, its text tower and projections left unused."""
    from .core.families.hf_clip import HFCLIPVisionFamily

    if hasattr(family, "expected_load_report"):
        return family.expected_load_report
    if isinstance(family, HFCLIPVisionFamily):
        return lambda source, rows: all(
            status == "UNEXPECTED" and key.startswith(CLIP_PARTS_OUTSIDE_THE_VISION_TOWER) for key, status in rows
        )
    return lambda source, rows: False


def verbose() -> bool:
    return os.environ.get(VERBOSE_VARIABLE) == "1"


def on_terminal(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class _OneLinePerUpdate:
    """A file for tqdm outside a terminal: each refresh becomes one line, the same count written once."""

    def __init__(self, stream: Any):
        self.stream = stream
        self._last_count: Optional[str] = None

    def write(self, text: str) -> None:
        text = _ANSI.sub("", text).replace("\r", "").strip()
        count = text.split(" [", 1)[0]  # "desc: n/total", without the times that change at every refresh
        if text and count != self._last_count:
            self._last_count = count
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def line_bar(
    iterable: Optional[Iterable] = None,
    *,
    desc: str = "",
    total: Optional[int] = None,
    initial: int = 0,
    leave: bool = True,
    disable: bool = False,
    **_: Any,
) -> tqdm:
    """The core's bar (:data:`fusion_bench_tinting.core.console.bar`) as the plugin's commands draw it: in place
    on a terminal; in a log file a line about every tenth of the phase, a nested bar (``leave=False``) none."""
    if on_terminal() or verbose():
        return tqdm(iterable, desc=desc, total=total, initial=initial, leave=leave, dynamic_ncols=True, disable=disable)
    every = max(1, int((total or 10) * LINE_EVERY))
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        initial=initial,
        disable=disable or not leave,
        file=_OneLinePerUpdate(sys.stderr),
        miniters=every,
        mininterval=0,
        bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]",
    )


def load_report_rows(message: str) -> Optional[Tuple[str, ReportRows]]:
    """The source and (key, status) rows of a transformers ``LOAD REPORT`` warning; None for other messages."""
    text = _ANSI.sub("", message)
    if "LOAD REPORT" not in text:
        return None
    source = text.split("from:", 1)[1].splitlines()[0].strip() if "from:" in text else ""
    rows = []
    for line in text.splitlines()[1:]:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 2 and cells[1] and cells[0] != "Key" and not set(cells[0]) <= set("-+"):
            rows.append((cells[0], cells[1]))
    return source, rows


class _DropRecords(logging.Filter):
    def __init__(self, drop: Callable[[logging.LogRecord], bool]):
        super().__init__()
        self.drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.drop(record)


@contextlib.contextmanager
def _filtered(logger_name: str, drop: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    logger, record_filter = logging.getLogger(logger_name), _DropRecords(drop)
    logger.addFilter(record_filter)
    try:
        yield
    finally:
        logger.removeFilter(record_filter)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a malformed record is shown, not swallowed
        return ""


@contextlib.contextmanager
def quiet_run(expected_load_report: Callable[[str, ReportRows], bool] = lambda source, rows: False) -> Iterator[None]:
    """Hide the noise that is expected for what the run does (see the module's docstring).

    ``expected_load_report(source, rows)`` tells which transformers load reports the model family expects."""
    if verbose():
        yield
        return

    def expected_report(record: logging.LogRecord) -> bool:
        report = load_report_rows(_message(record))
        return report is not None and bool(report[1]) and expected_load_report(*report)

    from fusion_bench.utils.instantiate_utils import set_print_function_call
    from transformers.utils import logging as transformers_logging

    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    core_bar, console.bar = console.bar, line_bar
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(set_print_function_call(False))
            stack.enter_context(_filtered("transformers.modeling_utils", expected_report))
            for name in ("fusion_bench.modelpool", "fusion_bench.taskpool"):  # "Loading model ..." and the like
                stack.enter_context(_level(name, logging.WARNING))
            yield
    finally:
        console.bar = core_bar
        if bars_were_on:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def _level(logger_name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(previous)


def profile_to_log_dir(profiled: Any, log_dir: Optional[str]) -> bool:
    """Write FusionBench's profile summary to ``<log_dir>/profile.txt`` instead of printing it; False (nothing
    done: print it) when verbose or without a log folder."""
    if verbose() or not log_dir:
        return False
    if rank_zero_only.rank == 0:
        from pathlib import Path

        Path(log_dir, "profile.txt").write_text(profiled.profiler.summary())
    return True


@contextlib.contextmanager
def bars_of(instance: Any) -> Iterator[None]:
    """Route the tqdm bars of the FusionBench classes ``instance`` derives from through :func:`progress`
    while the block runs (their per-batch bars, ``leave=False``, count as nested)."""
    if verbose():
        yield
        return
    modules = {sys.modules[c.__module__] for c in type(instance).__mro__ if c.__module__.startswith("fusion_bench.")}
    modules = [m for m in modules if hasattr(m, "tqdm")]

    def bar(
        iterable: Optional[Iterable] = None, desc: str = "", total: Optional[int] = None, leave: bool = True, **_: Any
    ) -> tqdm:
        return line_bar(iterable, desc=desc, total=total, leave=leave)

    originals = [(m, m.tqdm) for m in modules]
    for module in modules:
        module.tqdm = bar
    try:
        yield
    finally:
        for module, original in originals:
            module.tqdm = original
