"""select_on_holdout: a share of each task's adaptation inputs held out, and the iterate that agrees most with
the teachers on them kept."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import run_cli
from test_adaptation import _snapshot, _toy, _trainer

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.holdout import HoldoutSelection, split_holdout


def _noisy_teacher(x):
    """Labels with no pattern: fitting them on some inputs says nothing of the others."""
    return torch.randn(len(x), 3, generator=torch.Generator().manual_seed(int(x.abs().sum() * 1000)))


def test_held_out_inputs_never_reach_a_training_batch():
    merger, encode, states = _toy()
    trainer = _trainer(merger, encode, states, max_steps=12, select_on_holdout=0.25)
    held = [set(h.tolist()) for h in trainer.selection.held]
    drawn = [set() for _ in states]
    for index, sampler in enumerate(trainer.samplers):
        original = sampler.next

        def recording(original=original, index=index):
            batch = original()
            drawn[index].update(batch.tolist())
            return batch

        sampler.next = recording
    trainer.run()
    assert [len(h) for h in held] == [5, 5, 5]  # 25 % of 20 inputs per task
    for task_held, task_drawn in zip(held, drawn):
        assert not task_held & task_drawn
        assert task_held | task_drawn == set(range(20))  # every other input was trained on


def test_the_result_is_the_measured_state_with_the_best_agreement(monkeypatch):
    merger, encode, states = _toy(teacher_fn=_noisy_teacher)
    measured = {}
    original = HoldoutSelection.measure

    def recording(self, trainer, iteration):
        original(self, trainer, iteration)
        measured[iteration] = _snapshot(trainer.merger, trainer.tasks)

    monkeypatch.setattr(HoldoutSelection, "measure", recording)
    trainer = _trainer(merger, encode, states, max_steps=40, lr=0.2, select_on_holdout=0.4, log_every=5)
    stats = trainer.run()
    scores = trainer.selection.scores
    assert sorted(scores) == list(range(0, 41, 5))  # the start and every logging point
    best = max(scores, key=lambda iteration: (scores[iteration], -iteration))  # the first of equal scores
    assert stats.extras["selection"]["selected_iteration"] == best
    assert stats.extras["selection"]["held_out_per_task"] == [8, 8, 8]
    coefficients, heads = _snapshot(merger, states)
    assert torch.equal(coefficients, measured[best][0])
    assert all(torch.equal(a, b) for a, b in zip(heads, measured[best][1]))
    if best != 40:  # the last iterate was measured too, and it is not what the run returns
        assert not torch.equal(coefficients, measured[40][0])


def test_agreement_is_the_share_of_held_out_inputs_whose_top_class_is_the_teachers():
    merger, encode, states = _toy()
    trainer = _trainer(merger, encode, states, select_on_holdout=0.25)
    trainer.selection.measure(trainer, 0)
    expected = []
    with torch.no_grad():
        merged = merger()
        for task, held in zip(states, trainer.selection.held):
            logits = trainer.student_logits(task, merged, task.inputs.gather(held, torch.device("cpu")))
            expected.append((logits.argmax(1) == task.teacher[held].argmax(1)).float().mean().item())
    assert trainer.selection.scores[0] == pytest.approx(sum(expected) / len(expected))


def test_resuming_with_a_hold_out_keeps_the_same_best_state():
    options = dict(max_steps=8, select_on_holdout=0.25, log_every=2, lr=0.2)
    merger, encode, states = _toy(teacher_fn=_noisy_teacher)
    expected_stats = _trainer(merger, encode, states, **options).run()
    expected = _snapshot(merger, states)

    class Stop(Exception):
        pass

    saved = {}

    def stop_after_nine(trainer):
        if trainer.visits == 9:
            buffer = io.BytesIO()
            torch.save(trainer.state_dict(), buffer)
            saved["state"] = buffer.getvalue()
            raise Stop

    merger, encode, states = _toy(teacher_fn=_noisy_teacher)
    with pytest.raises(Stop):
        _trainer(merger, encode, states, **options).run(on_visit=stop_after_nine)
    merger, encode, states = _toy(teacher_fn=_noisy_teacher)
    resumed = _trainer(merger, encode, states, **options)
    resumed.load_state_dict(torch.load(io.BytesIO(saved["state"]), weights_only=False))
    stats = resumed.run()
    actual = _snapshot(merger, states)
    assert stats.extras["selection"] == expected_stats.extras["selection"]
    assert torch.equal(expected[0], actual[0])
    assert all(torch.equal(a, b) for a, b in zip(expected[1], actual[1]))


def test_a_task_too_small_to_hold_inputs_out_is_refused_naming_the_option():
    with pytest.raises(TintingConfigError, match=r"select_on_holdout=0\.4: a task has 1 adaptation input"):
        split_holdout([20, 1], 0.4, seed=0)


@pytest.mark.parametrize("value", [0.5, -0.1, "a lot"])
def test_a_share_outside_zero_to_one_half_is_refused_when_the_method_is_built(value):
    with pytest.raises(TintingConfigError, match="select_on_holdout"):
        ModelTintingAlgorithm(select_on_holdout=value)


def test_a_run_with_a_hold_out_reports_the_selected_iteration(tiny_suites, tmp_path):
    method = ["method=model_tinting", "method.max_steps=20", "method.select_on_holdout=0.25"]
    overrides = ["modelpool=tiny-clip_TA4", *method]
    report = run_cli(["--config-dir", str(tiny_suites / "config"), *overrides], tmp_path / "log")
    selection = report["adaptation"]["selection"]
    assert sorted(int(i) for i in selection["score_by_iteration"]) == [0, 10, 20]
    assert selection["selected_iteration"] in (0, 10, 20)
    assert all(held >= 1 for held in selection["held_out_per_task"])
