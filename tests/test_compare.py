"""The comparison command on the tiny suites: outputs, values, failures and resumption."""

from __future__ import annotations

import csv
import json

import pytest

from fusion_bench_tinting.comparison.cli import compare, parse_arguments
from fusion_bench_tinting.comparison.methods import METHODS
from fusion_bench_tinting.comparison.runner import RunResult
from fusion_bench_tinting.comparison.tables import build_rows, markdown_table


def _arguments(tiny_suites, out, *extra):
    return parse_arguments(
        [
            "--suite",
            "tiny-clip_TA4",
            "--config-dir",
            str(tiny_suites / "config"),
            "--out",
            str(out),
            "--methods",
            "individual,task_arithmetic,model_tinting,model_tinting_plusplus",
            "--analyses",
            "all",
            "--set",
            "model_tinting:method.max_steps=5",
            "--set",
            "model_tinting_plusplus:method.loss=hinge",  # a configuration error: this method fails
            *extra,
            "--",
            "fabric.accelerator=cpu",
        ]
    )


@pytest.mark.slow
def test_compare_writes_tables_charts_and_json_and_resumes(tiny_suites, tmp_path):
    out = tmp_path / "comparison"
    result = compare(_arguments(tiny_suites, out))
    for name in (
        "comparison.md",
        "comparison.csv",
        "comparison.json",
        "radar.png",
        "bars.png",
        "coefficients_model_tinting.png",
    ):
        assert (out / name).stat().st_size > 0, name

    runs = {name: group[0] for name, group in result["runs"].items()}  # one run each: no --seeds
    assert [runs[m]["status"] for m in ("individual", "task_arithmetic", "model_tinting")] == ["finished"] * 3
    assert runs["model_tinting_plusplus"]["status"] == "failed"
    assert "method.loss='hinge'" in runs["model_tinting_plusplus"]["reason"]

    # the table's numbers are the reports' numbers
    rows = {row["method"]: row for row in csv.DictReader((out / "comparison.csv").open())}
    for method in ("individual", "task_arithmetic", "model_tinting"):
        report = json.loads((out / "runs" / method / "program_report.json").read_text())
        assert float(rows[method]["average"]) == pytest.approx(100 * report["average"]["accuracy"], abs=1e-3)
        assert float(rows[method]["stl10"]) == pytest.approx(100 * report["stl10"]["accuracy"], abs=1e-3)
    markdown = (out / "comparison.md").read_text()
    assert "failed: " in markdown and "points against the best baseline" in markdown
    analyses = json.loads((out / "comparison.json").read_text())["analyses"]
    assert 0.0 <= analyses["sparsity"]["model_tinting"]["fraction_below_1e-5"] <= 1.0
    assert set(analyses["discrepancy"]["model_tinting"]) == {"eurosat", "stl10", "fashion_mnist", "cifar10"}
    assert set(analyses["loss_correlation"]["stl10"]) == {"before (task arithmetic)", "after (model tinting)"}

    # a second call skips the finished runs (their logs are untouched) and retries the failed one
    finished_log = out / "runs" / "model_tinting" / "console.log"
    before = finished_log.stat().st_mtime_ns
    again = compare(_arguments(tiny_suites, out))
    assert finished_log.stat().st_mtime_ns == before
    assert again["runs"]["model_tinting"][0]["report"] == runs["model_tinting"]["report"]
    assert again["runs"]["model_tinting_plusplus"][0]["status"] == "failed"


def test_methods_fusion_bench_lacks_for_a_family_are_marked_not_available(tmp_path):
    from fusion_bench_tinting.comparison.runner import Suite, run_method

    result = run_method("adamerging_surgery", "seq_cls", Suite("x", "y"), tmp_path, [], [])
    assert result.status == "not_available"
    assert "no AdaMerging + Surgery for this model family (seq_cls)" in result.reason
    assert METHODS["adamerging"].overrides_for("gpt2") == ["method=adamerging/layer_wise_gpt2"]


def test_markdown_marks_the_best_merged_result_and_our_gain():
    reports = {
        "individual": {"a": {"accuracy": 0.9}, "average": {"accuracy": 0.9}},
        "task_arithmetic": {"a": {"accuracy": 0.5}, "average": {"accuracy": 0.5}},
        "model_tinting": {"a": {"accuracy": 0.8}, "average": {"accuracy": 0.8}},
    }
    results = [[RunResult(name, "finished", report=report)] for name, report in reports.items()]
    tasks, rows = build_rows(results)
    table = markdown_table(tasks, rows, {"model_tinting": (89.6, "paper")})
    assert "| Model Tinting | **80.0** | **80.0** | 89.6 (paper) |" in table
    assert "| Individual fine-tuned | 90.0 | 90.0 |" in table  # reference rows are never bold
    assert "Model Tinting: +30.0 points against the best baseline (Task Arithmetic, 50.0)" in table


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--out", "x"])
    assert "give --suite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_arguments(["--suite", "s", "--out", "x", "--methods", "model_tinting,magic"])
    assert "unknown methods ['magic']" in capsys.readouterr().err


def test_seeds_aggregate_to_mean_and_sample_std():
    """Three seeds of one method: mean and sample standard deviation per task and average, in the table."""
    seeded = [
        RunResult("model_tinting", "finished", seed=seed, report={"a": {"accuracy": a}, "average": {"accuracy": a}})
        for seed, a in ((42, 0.70), (1, 0.74), (2, 0.75))
    ]
    single = [RunResult("task_arithmetic", "finished", report={"a": {"accuracy": 0.5}, "average": {"accuracy": 0.5}})]
    tasks, rows = build_rows([single, seeded])
    row = rows[1]
    assert row["seeds"] == [42, 1, 2]
    assert row["a"] == pytest.approx(73.0)
    assert row["a_std"] == pytest.approx(((3.0**2 + 1.0**2 + 2.0**2) / 2) ** 0.5)  # sample std: divide by n - 1
    assert rows[0]["average_std"] == 0.0
    table = markdown_table(tasks, rows, {})
    assert "| Model Tinting | **73.0 ± 2.6** | **73.0 ± 2.6** |" in table
    assert "mean ± standard deviation over seeds 1, 2, 42" in table


def test_a_failed_seed_is_reported_beside_the_finished_ones():
    group = [
        RunResult("model_tinting", "finished", seed=42, report={"a": {"accuracy": 0.7}, "average": {"accuracy": 0.7}}),
        RunResult("model_tinting", "failed", "CUDA out of memory", seed=1),
    ]
    _, rows = build_rows([group])
    assert rows[0]["seeds"] == [42] and rows[0]["a"] == pytest.approx(70.0)
    assert rows[0]["reason"] == "1 of 2 runs failed: CUDA out of memory"


def test_seeds_not_run_are_named_beside_the_finished_ones_and_a_method_with_none_is_marked():
    def finished(name, seed, accuracy):
        report = {"a": {"accuracy": accuracy}, "average": {"accuracy": accuracy}}
        return RunResult(name, "finished", seed=seed, report=report)

    partial = [
        finished("model_tinting", 42, 0.70),
        finished("model_tinting", 1, 0.72),
        RunResult("model_tinting", "not_run", "no finished run in the output folder", seed=2),
    ]
    missing = [
        RunResult("model_tinting_plusplus", "not_run", "no finished run in the output folder", seed=s) for s in (42, 1)
    ]
    tasks, rows = build_rows([partial, missing])
    assert rows[0]["seeds"] == [42, 1] and rows[0]["seeds_not_run"] == [2] and rows[0]["a"] == pytest.approx(71.0)
    assert rows[0]["reason"] == "seeds not run yet: 2" and rows[1]["status"] == "not_run"
    table = markdown_table(tasks, rows, {})
    assert "Model Tinting: seeds 42, 1 only (2 not run yet)." in table
    _, rows = build_rows([partial[1:]])
    assert "Model Tinting: seed 1 only (2 not run yet)." in markdown_table(tasks, rows, {})
    assert "| Model Tinting++ | not run: no finished run in the output folder |" in table


def test_reuse_only_starts_no_run_and_reuses_a_finished_one(tmp_path, monkeypatch):
    from fusion_bench_tinting.comparison import runner

    def no_run(*args, **kwargs):
        raise AssertionError("a run was started")

    monkeypatch.setattr(runner, "run_to_log", no_run)
    suite = runner.Suite("minilm_text", "minilm_text")
    result = runner.run_method("model_tinting", "seq_cls", suite, tmp_path, [], [], seed=1, start=False)
    assert result.status == "not_run" and result.report is None
    log_dir = tmp_path / "runs" / "model_tinting" / "seed_42"
    log_dir.mkdir(parents=True)
    (log_dir / "program_report.json").write_text(json.dumps({"average": {"accuracy": 0.5}}))
    result = runner.run_method("model_tinting", "seq_cls", suite, tmp_path, [], [], seed=42, start=False)
    assert result.status == "finished" and result.report == {"average": {"accuracy": 0.5}}
    assert parse_arguments(["--suite", "s", "--out", str(tmp_path), "--reuse-only"]).reuse_only


def test_seeded_runs_get_their_own_log_folders_and_seed_overrides(tmp_path, monkeypatch):
    """Methods that draw at random run once per seed with their seed option; deterministic ones once."""
    from fusion_bench_tinting.comparison import runner

    commands = []

    def fake_run(command, stdout, **kwargs):
        log_dir = next(a.split("=", 1)[1] for a in command if a.startswith("path.log_dir="))
        (runner.Path(log_dir) / "program_report.json").write_text(json.dumps({"average": {"accuracy": 0.5}}))
        commands.append(command)
        return runner.subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    suite = runner.Suite("minilm_text", "minilm_text")
    assert runner.seeds_for("task_arithmetic", [42, 1]) == [None]
    assert runner.seeds_for("model_tinting", [42, 1]) == [42, 1]
    for seed in runner.seeds_for("model_tinting", [42, 1]):
        result = runner.run_method("model_tinting", "seq_cls", suite, tmp_path, [], [], seed=seed)
        assert result.status == "finished" and result.seed == seed
        assert result.log_dir == str(tmp_path / "runs" / "model_tinting" / f"seed_{seed}")
    assert [c[-3] for c in commands] == ["method.seed=42", "method.seed=1"]
    # finished runs are reused, not run again
    runner.run_method("model_tinting", "seq_cls", suite, tmp_path, [], [], seed=42)
    assert len(commands) == 2


def test_variant_rows_run_their_base_method_with_their_overrides():
    args = parse_arguments(
        [
            "--suite",
            "minilm_text",
            "--out",
            "x",
            "--methods",
            "model_tinting,mt_merged_pooler",
            "--variant",
            "mt_merged_pooler=model_tinting",
            "--set",
            "mt_merged_pooler:method.head_projection=merged",
            "--seeds",
            "42,1",
        ]
    )
    try:
        spec = METHODS["mt_merged_pooler"]
        assert spec.label == "Model Tinting (head_projection=merged)" and spec.ours and spec.seed_key == "method.seed"
        assert spec.overrides_for("seq_cls") == ["method=model_tinting"]
        assert args.seeds == [42, 1]
    finally:
        METHODS.pop("mt_merged_pooler", None)
    with pytest.raises(SystemExit):
        parse_arguments(["--suite", "s", "--out", "x", "--variant", "v=no_such_method"])


def test_our_runs_checkpoint_and_a_killed_one_resumes_from_its_checkpoints(tmp_path, monkeypatch):
    from fusion_bench_tinting.comparison import runner

    commands = []

    def fake_run(command, stdout, **kwargs):
        commands.append(command)
        return runner.subprocess.CompletedProcess(command, 1)  # killed: no report

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    suite = runner.Suite("minilm_text", "minilm_text")
    runner.run_method("model_tinting", "seq_cls", suite, tmp_path, [], [], seed=1)
    log_dir = tmp_path / "runs" / "model_tinting" / "seed_1"
    assert f"method.checkpoint_every={runner.CHECKPOINT_EVERY}" in commands[0]
    assert not any(a.startswith("method.resume=") for a in commands[0])
    (log_dir / "checkpoints").mkdir()
    (log_dir / "checkpoints" / "checkpoint-200.pt").write_bytes(b"")
    runner.run_method("model_tinting", "seq_cls", suite, tmp_path, [], [], seed=1)
    assert f"method.resume={log_dir}" in commands[1]
    runner.run_method("task_arithmetic", "seq_cls", suite, tmp_path, [], [])  # not ours: no checkpoint options
    assert not any(a.startswith("method.checkpoint_every") for a in commands[2])


def test_a_runs_output_goes_to_its_log_and_to_the_screen_when_asked(tmp_path, capsys):
    import sys

    from fusion_bench_tinting.comparison.runner import run_to_log

    command = [sys.executable, "-c", "import sys; print('step 1'); sys.stdout.write('bar\\r'); sys.exit(3)"]
    with open(tmp_path / "console.log", "w") as log:
        assert run_to_log(command, log, None, echo=True) == 3
    assert (tmp_path / "console.log").read_bytes() == b"step 1\nbar\r"
    assert capsys.readouterr().out == "step 1\nbar\r"
    with open(tmp_path / "quiet.log", "w") as log:
        assert run_to_log(command, log, None, echo=False) == 3
    assert capsys.readouterr().out == "" and (tmp_path / "quiet.log").read_bytes() == b"step 1\nbar\r"
    with open(tmp_path / "slow.log", "w") as log:  # past its time: stopped, reported as timed out
        assert run_to_log([sys.executable, "-c", "import time; time.sleep(30)"], log, 1.0, echo=True) is None


def test_both_protocols_run_each_adaptive_method_twice_and_data_free_ones_once(tmp_path, monkeypatch):
    from fusion_bench_tinting.comparison import cli, runner

    commands = []

    def fake_run(command, stdout, **kwargs):
        log_dir = next(a.split("=", 1)[1] for a in command if a.startswith("path.log_dir="))
        accuracy = 0.6 if "method.adaptation_data=val" in command else 0.7
        (runner.Path(log_dir) / "program_report.json").write_text(
            json.dumps({"t": {"accuracy": accuracy}, "average": {"accuracy": accuracy}})
        )
        commands.append(command)
        return runner.subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.setattr(
        cli, "composed_config", lambda suite: {"modelpool": {"_target_": "x.SequenceClassificationEncoderPool"}}
    )
    args = parse_arguments(
        [
            "--suite",
            "minilm_text",
            "--out",
            str(tmp_path),
            "--methods",
            "task_arithmetic,model_tinting",
            "--set",
            "model_tinting:method.max_steps=3",
            "--protocols",
            "transductive,inductive",
        ]
    )
    try:
        result = compare(args)
    finally:
        METHODS.pop("model_tinting@inductive", None)
    assert list(result["runs"]) == ["task_arithmetic", "model_tinting", "model_tinting@inductive"]
    inductive = next(c for c in commands if "method.adaptation_data=val" in c)
    assert "method.max_steps=3" in inductive and "method=model_tinting" in inductive
    assert (
        sum("method=model_tinting" in c for c in commands) == 2
        and sum("method=task_arithmetic" in c for c in commands) == 1
    )
    markdown = (tmp_path / "comparison.md").read_text()
    assert "Model Tinting [inductive: adapts on val]" in markdown and "Rows marked *[inductive]*" in markdown
    with pytest.raises(SystemExit):
        parse_arguments(["--suite", "s", "--out", "x", "--protocols", "semi"])


def test_adding_a_row_keeps_the_earlier_rows_and_only_restricts_the_table(tmp_path, monkeypatch):
    from fusion_bench_tinting.comparison import cli, runner

    def fake_run(command, stdout, **kwargs):
        log_dir = next(a.split("=", 1)[1] for a in command if a.startswith("path.log_dir="))
        (runner.Path(log_dir) / "program_report.json").write_text(
            json.dumps({"t": {"accuracy": 0.5}, "average": {"accuracy": 0.5}})
        )
        return runner.subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.setattr(
        cli, "composed_config", lambda suite: {"modelpool": {"_target_": "x.SequenceClassificationEncoderPool"}}
    )
    common = ["--suite", "minilm_text", "--out", str(tmp_path), "--seeds", "42,1"]
    try:
        compare(
            parse_arguments(
                [
                    *common,
                    "--methods",
                    "task_arithmetic,mt_v",
                    "--variant",
                    "mt_v=model_tinting",
                    "--set",
                    "mt_v:method.lr=0.1",
                ]
            )
        )
        METHODS.pop("mt_v")  # a later call that does not declare the variant again
        merged = compare(parse_arguments([*common, "--methods", "emr_merging"]))
        assert list(merged["runs"]) == ["task_arithmetic", "mt_v", "emr_merging"]
        assert [r["seed"] for r in merged["runs"]["mt_v"]] == [42, 1] and all(
            r["status"] == "finished" for r in merged["runs"]["mt_v"]
        )
        assert "Model Tinting (lr=0.1)" in (tmp_path / "comparison.md").read_text()
        only = compare(parse_arguments([*common, "--methods", "emr_merging", "--only"]))
        assert list(only["runs"]) == ["emr_merging"]
    finally:
        METHODS.pop("mt_v", None)


def _inside_figure(figure) -> list:
    """The texts (tick labels, legend entries) that a renderer places outside the figure."""
    figure.canvas.draw()
    renderer, box = figure.canvas.get_renderer(), figure.bbox
    texts = [t for axes in figure.axes for t in axes.get_yticklabels() + axes.get_xticklabels() if t.get_text()]
    texts += [t for legend in figure.legends for t in legend.get_texts()]
    outside = []
    for text in texts:
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1 or extent.y1 > box.y1 + 1:
            outside.append(text.get_text())
    return outside


def test_charts_keep_long_labels_inside_the_figure_and_show_the_gap_to_the_best_baseline(tmp_path):
    import matplotlib.pyplot as plt

    from fusion_bench_tinting.comparison.methods import register_variant
    from fusion_bench_tinting.comparison.plots import bar_figure, best_baseline, gap_chart, radar_figure

    register_variant(
        "mt_long",
        "model_tinting",
        ["method.init_from=lot", "method.head_projection=merged", "method.loss=soft_ce", "method.adaptation_data=val"],
    )
    try:
        tasks = ["movie_sentiment", "movie_subjectivity", "health_news_outlet"]
        rows = [
            {
                "method": m,
                "label": METHODS[m].label,
                "status": "finished",
                "seeds": [42],
                **dict(zip(tasks, values)),
                "average": sum(values) / 3,
            }
            for m, values in [
                ("individual", [80, 99, 55]),
                ("task_arithmetic", [50, 95, 40]),
                ("emr_merging", [78, 100, 50]),
                ("mt_long", [79, 100, 53]),
            ]
        ]
        assert best_baseline(tasks, rows) == {
            "movie_sentiment": 78,
            "movie_subjectivity": 100,
            "health_news_outlet": 50,
        }
        for figure in (bar_figure(rows, "minilm_text (seq_cls)"), radar_figure(tasks, rows, "minilm_text")):
            assert _inside_figure(figure) == []
            plt.close(figure)
        gap_chart(tasks, rows, tmp_path / "gap.png", "minilm_text")
        assert (tmp_path / "gap.png").stat().st_size > 0
    finally:
        METHODS.pop("mt_long", None)


def test_chart_rows_beyond_ten_keep_colours_of_their_own(tmp_path):
    import matplotlib.pyplot as plt

    from fusion_bench_tinting.comparison.plots import distinct_colours, gap_figure

    for count in (3, 13, 27):
        assert len(set(distinct_colours(count))) == count
    variants = [f"mt_colour_{i}" for i in range(13)]
    from fusion_bench_tinting.comparison.methods import register_variant

    for name in variants:
        register_variant(name, "model_tinting", [f"method.lr={0.001 * (1 + variants.index(name))}"])
    try:
        rows = [{"method": "task_arithmetic", "label": "Task Arithmetic", "status": "finished", "a": 50.0}]
        rows += [{"method": n, "label": METHODS[n].label, "status": "finished", "a": 51.0} for n in variants]
        figure = gap_figure(["a"], rows, "colours")
        colours = {tuple(bar.get_facecolor()) for bar in figure.axes[0].patches}
        assert len(colours) == 13
        plt.close(figure)
    finally:
        for name in variants:
            METHODS.pop(name, None)
