"""What a run prints: its length, one bar per phase, expected noise hidden, the rest still shown."""

from __future__ import annotations

import io
import logging
import os
import subprocess

import pytest
from tqdm.auto import tqdm as tqdm_bar

from fusion_bench_tinting import program_console
from fusion_bench_tinting import quiet as console
from fusion_bench_tinting.core import console as core_console

TEXT_TOWER_REPORT = (
    "\x1b[1mCLIPVisionModel LOAD REPORT\x1b[0m from: /models/pretrained\n"
    "Key                              | Status     |  | \n"
    "---------------------------------+------------+--+-\n"
    "text_model.final_layer_norm.bias | \x1b[33mUNEXPECTED\x1b[0m |  | \n"
    "logit_scale                      | UNEXPECTED |  | \n"
    "\nNotes:\n- UNEXPECTED:\tcan be ignored when loading from different task/architecture."
)
VISION_REPORT = TEXT_TOWER_REPORT.replace("text_model.final_layer_norm.bias", "vision_model.post_layernorm.bias")


def test_the_20_iteration_tiny_clip_run_prints_under_200_lines_with_the_results_once(tiny_suites, tmp_path):
    command = [
        "fusion_bench",
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "method.max_steps=20",
        "fabric.accelerator=cpu",
        f"path.log_dir={tmp_path / 'log'}",  # print_config: default
    ]
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_VARIABLE}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert len(lines) <= 200, len(lines)
    assert "CONFIG" in output and "max_steps: 20" in output  # FusionBench's config tree is still printed
    assert "\x1b[A" not in output and "\r" not in output  # a log, not a terminal: plain lines
    assert "LOAD REPORT" not in output and "Unused argument" not in output
    assert output.count("accuracy per task (%)") == 1  # the table, once ...
    assert "Evaluation Result" not in output and not any(line.startswith("eurosat:") for line in lines)  # ... only
    assert f"Saved in {tmp_path / 'log'}: model_tinting.safetensors" in output
    phase_lines = [line for line in lines if line.startswith("Model Tinting adaptation:")]
    assert 5 <= len(phase_lines) <= 13 and phase_lines[-1].startswith("Model Tinting adaptation: 20/20")
    assert (tmp_path / "log" / "profile.txt").read_text().strip()  # the profile went to the log folder


def _emitted(record_text: str, expected) -> list:
    """The load-report warnings that reach a handler of transformers' loading logger inside quiet_run."""
    logger = logging.getLogger("transformers.modeling_utils")
    seen: list = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    try:
        with console.quiet_run(expected):
            logger.warning(record_text)
    finally:
        logger.removeHandler(handler)
    return seen


def test_an_expected_load_report_is_hidden_and_any_other_shown(monkeypatch):
    from fusion_bench_tinting.core.families.hf_clip import HFCLIPVisionFamily

    monkeypatch.delenv(console.VERBOSE_VARIABLE, raising=False)
    expected = console.expected_load_reports(HFCLIPVisionFamily.__new__(HFCLIPVisionFamily))  # reads no state
    assert console.load_report_rows(TEXT_TOWER_REPORT) == (
        "/models/pretrained",
        [("text_model.final_layer_norm.bias", "UNEXPECTED"), ("logit_scale", "UNEXPECTED")],
    )
    assert _emitted(TEXT_TOWER_REPORT, expected) == []
    assert len(_emitted(VISION_REPORT, expected)) == 1  # a vision weight unused: shown
    assert len(_emitted("some other warning", expected)) == 1
    monkeypatch.setenv(console.VERBOSE_VARIABLE, "1")
    assert len(_emitted(TEXT_TOWER_REPORT, expected)) == 1  # verbose shows everything


def test_outside_a_terminal_a_phase_writes_a_line_every_tenth_and_nested_bars_nothing(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(console.sys, "stderr", stream)
    monkeypatch.delenv(console.VERBOSE_VARIABLE, raising=False)
    monkeypatch.setattr(core_console, "bar", core_console.bar)  # restored after the test
    with console.quiet_run():  # the plugin's bars for the core's phases
        for _ in core_console.progress(range(50), desc="phase"):
            for _ in core_console.progress(range(3), desc="part", nested=True):
                pass
    assert core_console.bar is tqdm_bar
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("phase: 0/50") and lines[-1].startswith("phase: 50/50")
    assert len(lines) == 11 and all(line.startswith("phase: ") for line in lines)
    assert "\r" not in stream.getvalue()


def test_program_output_is_changed_for_our_methods_only_and_skips_a_printed_report(monkeypatch):
    assert program_console.runs_our_method(["fusion_bench", "modelpool=x", "method=model_tinting_plusplus"])
    assert not program_console.runs_our_method(["fusion_bench", "method=ties_merging"])
    printed = []
    print_json = program_console.skip_printed_report(lambda report, **kwargs: printed.append(report))
    shown, other = {"a": {"accuracy": 0.5}}, {"b": {"accuracy": 0.5}}
    monkeypatch.setattr(program_console, "last_printed_report", shown)
    print_json(shown, print_type=False)
    print_json(other, print_type=False)
    assert printed == [other]


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([("classifier.weight", "MISSING"), ("classifier.bias", "MISSING")], True),
        ([("classifier.weight", "MISSING"), ("bert.pooler.dense.weight", "MISSING")], False),
    ],
)
def test_a_text_pretrained_model_read_as_a_classifier_may_miss_its_head_only(rows, expected):
    from fusion_bench_tinting.families.sequence_classification import SequenceClassificationFamily

    family = SequenceClassificationFamily.__new__(SequenceClassificationFamily)
    family.modelpool = type("Pool", (), {"_models": {"_pretrained_": "/models/bert"}})()
    assert family.expected_load_report("/models/bert", rows) is expected
    assert family.expected_load_report("/models/task_a", rows) is False  # a fine-tuned model without its head
