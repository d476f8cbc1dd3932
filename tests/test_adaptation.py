"""The adaptation loop on a toy model: what moves at each optimizer step."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fusion_bench_tinting.core.adaptation import AdaptationOptions, TintingTrainer
from fusion_bench_tinting.core.data import TensorInputs
from fusion_bench_tinting.core.merging import LayerWiseMerger
from fusion_bench_tinting.core.run_state import TaskState
from fusion_bench_tinting.methods import PluginTrainer

K = 3


def _toy(seed=0, teacher_fn=None):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6)).requires_grad_(False)
    pre = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    merger = LayerWiseMerger(pre, K, init_value=0.3)
    states = []
    for k in range(K):
        ft = copy.deepcopy(encoder)
        with torch.no_grad():
            for p in ft.parameters():
                p.add_(0.5 * torch.randn_like(p))
        merger.set_task_vector(k, dict(ft.named_parameters()))
        head = nn.Linear(6, 3)
        x = torch.randn(20, 4)
        with torch.no_grad():
            teacher = head(ft(x)) if teacher_fn is None else teacher_fn(x)
        states.append(TaskState(name=f"task{k}", inputs=TensorInputs(x), teacher=teacher, head=head))
    encode = lambda params, x: functional_call(encoder, dict(params), (x,))  # noqa: E731
    return merger, encode, states


def _trainer(merger, encode, states, fused_optimizer=None, plugin=False, **options):
    """The core's loop; the plugin's with ``plugin`` (its state for checkpoints), a plugin option (``tint_l2``,
    ``select_on_holdout``) or the fused Adam (whose steps the plugin cancels on the device)."""
    defaults = dict(max_steps=2, lr=0.05, batch_size=8)
    defaults.update(options)
    core = {f.name for f in dataclasses.fields(AdaptationOptions)}
    settings = {name: defaults.pop(name) for name in list(defaults) if name not in core}
    return (PluginTrainer if plugin or settings or fused_optimizer else TintingTrainer)(
        merger,
        encode,
        states,
        AdaptationOptions(**defaults),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        fused_optimizer=fused_optimizer,
        **settings,
    )


def _snapshot(merger, states):
    return merger.coefficients.detach().clone(), [s.head.weight.detach().clone() for s in states]


def test_a_sequential_step_moves_coefficients_and_only_the_current_tasks_head():
    merger, encode, states = _toy()
    trainer = _trainer(merger, encode, states)
    trainer.run()  # every head now has Adam state (momentum) of its own
    before_coefficients, before_heads = _snapshot(merger, states)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.task_loss(1, trainer.merged()).backward()
    trainer.optimizer.step()
    after_coefficients, after_heads = _snapshot(merger, states)
    assert not torch.equal(before_coefficients, after_coefficients)
    assert not torch.equal(before_heads[1], after_heads[1])
    assert torch.equal(before_heads[0], after_heads[0])
    assert torch.equal(before_heads[2], after_heads[2])


def test_each_iteration_makes_one_step_per_task():
    merger, encode, states = _toy()
    stats = _trainer(merger, encode, states, max_steps=4).run()
    assert stats.optimizer_steps == 4 * K and stats.skipped_steps == 0
    assert stats.samples_seen == {f"task{k}": 4 * 8 for k in range(K)}


def test_frozen_parts_stay_frozen():
    merger, encode, states = _toy()
    before_coefficients, before_heads = _snapshot(merger, states)
    _trainer(merger, encode, states, train_coefficients=False).run()
    after_coefficients, after_heads = _snapshot(merger, states)
    assert torch.equal(before_coefficients, after_coefficients)
    assert not torch.equal(before_heads[0], after_heads[0])

    merger, encode, states = _toy()
    before_coefficients, before_heads = _snapshot(merger, states)
    _trainer(merger, encode, states, train_tinted_layer=False).run()
    after_coefficients, after_heads = _snapshot(merger, states)
    assert not torch.equal(before_coefficients, after_coefficients)
    assert all(torch.equal(b, a) for b, a in zip(before_heads, after_heads))


def test_plusplus_batch_with_every_sample_filtered_is_skipped_not_nan():
    # the teacher is unsure (p ~ 0.34 for class 0); the student head is sure of class 1 -> all dropped
    merger, encode, states = _toy(teacher_fn=lambda x: torch.tensor([[0.02, 0.0, 0.0]]).expand(x.shape[0], 3))
    with torch.no_grad():
        for s in states:
            s.head.weight.zero_()
            s.head.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    before_coefficients, before_heads = _snapshot(merger, states)
    stats = _trainer(merger, encode, states, confidence_filter=True, max_steps=3).run()
    assert stats.optimizer_steps == 0 and stats.skipped_steps == 3 * K
    assert stats.dropped_fraction() == {f"task{k}": 1.0 for k in range(K)}
    after_coefficients, after_heads = _snapshot(merger, states)
    assert torch.equal(before_coefficients, after_coefficients)
    assert all(torch.isfinite(h).all() for h in after_heads)


def _toy_with_one_hopeless_task():
    """Task 0's teacher is unsure and its head sure of another class, so Model Tinting++ drops every one
    of its samples, always; tasks 1 and 2 keep theirs."""
    merger, encode, states = _toy()
    unsure = torch.tensor([[0.02, 0.0, 0.0]]).expand(states[0].teacher.shape[0], 3)
    states[0] = TaskState(name="task0", inputs=states[0].inputs, teacher=unsure.clone(), head=states[0].head)
    with torch.no_grad():
        states[0].head.weight.zero_()
        states[0].head.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    return merger, encode, states


def test_plusplus_empty_batches_are_cancelled_on_the_device_as_the_host_check_skips_them():
    """With the fused Adam the step on an empty batch is cancelled inside the update (no host sync);
    it must leave everything as the host-checked skip does."""
    results = []
    for fused in (False, True):  # False: the host check; True: cancelled on the device
        merger, encode, states = _toy_with_one_hopeless_task()
        hopeless_head = [p.detach().clone() for p in states[0].head.parameters()]
        trainer = _trainer(merger, encode, states, fused_optimizer=fused, confidence_filter=True, max_steps=4)
        assert trainer.fused == fused
        stats = trainer.run()
        assert all(torch.equal(a, b) for a, b in zip(hopeless_head, states[0].head.parameters()))
        assert stats.optimizer_steps == 4 * 2 and stats.skipped_steps == 4
        results.append((stats, *_snapshot(merger, states)))
    (host_stats, host_coefficients, host_heads), (device_stats, device_coefficients, device_heads) = results
    assert device_stats.samples_dropped == host_stats.samples_dropped
    assert device_stats.samples_dropped["task0"] == 4 * 8
    assert device_stats.final_loss == pytest.approx(host_stats.final_loss, abs=1e-6)
    torch.testing.assert_close(device_coefficients, host_coefficients, atol=1e-6, rtol=0)
    for device_head, host_head in zip(device_heads, host_heads):
        torch.testing.assert_close(device_head, host_head, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fused, expect_reads", [(True, False), (False, True)], ids=["on-device", "host-check"])
def test_plusplus_step_reads_nothing_back_from_the_device(monkeypatch, fused, expect_reads):
    """No value of a step goes back to the host from our code (``bool``, ``item``, ``int``, ...): each would
    stall the CPU until the GPU has finished the step. Counted on the CPU by watching those calls."""
    import sys

    merger, encode, states = _toy_with_one_hopeless_task()
    trainer = _trainer(merger, encode, states, fused_optimizer=fused, confidence_filter=True)
    reads = []

    def watched(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("fusion_bench_tinting"):
                reads.append((name, caller))
            return original(self, *args, **kwargs)

        return read

    for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, watched(name))
    for index in (0, 1, 2, 0):
        trainer._sequential_step(index)
    monkeypatch.undo()
    assert bool(reads) == expect_reads, reads
    trainer._settle_empty_steps()
    assert (trainer.steps, trainer.skipped) == (2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_plusplus_cuda_steps_never_synchronise():
    """On a GPU, with CUDA's own sync detector: sequential ++ steps (fused Adam, inputs on the device)
    make no synchronising call, empty batches included."""
    merger, encode, states = _toy_with_one_hopeless_task()
    cuda = torch.device("cuda")
    merger.to(cuda)
    states = [
        TaskState(name=s.name, inputs=s.inputs.to(cuda), teacher=s.teacher.to(cuda), head=s.head.to(cuda))
        for s in states
    ]
    trainer = PluginTrainer(
        merger,
        encode,
        states,
        AdaptationOptions(max_steps=2, lr=0.05, batch_size=8, confidence_filter=True),
        device=cuda,
        generator=torch.Generator().manual_seed(0),
    )
    assert trainer.fused  # the fused Adam is CUDA's default
    for index in (1, 2):  # first steps create Adam's state
        trainer._sequential_step(index)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for index in (0, 1, 2, 0):
            trainer._sequential_step(index)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer._settle_empty_steps()
    assert (trainer.steps, trainer.skipped) == (4, 2)


def test_plusplus_counts_dropped_samples_and_still_learns():
    merger, encode, states = _toy()
    stats = _trainer(merger, encode, states, confidence_filter=True, max_steps=5).run()
    fractions = stats.dropped_fraction()
    assert set(fractions) == {"task0", "task1", "task2"}
    assert all(0.0 <= f < 1.0 for f in fractions.values())
    assert stats.optimizer_steps + stats.skipped_steps == 5 * K


def _dense_toy():
    """One segmentation-like task: a 1x1-convolution encoder and head over 4x4 'images'; the teacher's
    outputs are per pixel (samples, classes, height, width)."""
    torch.manual_seed(0)
    encoder = nn.Conv2d(3, 6, 1).requires_grad_(False)
    merger = LayerWiseMerger({n: p.detach().clone() for n, p in encoder.named_parameters()}, 1, init_value=0.3)
    finetuned = copy.deepcopy(encoder)
    with torch.no_grad():
        for p in finetuned.parameters():
            p.add_(0.5 * torch.randn_like(p))
    merger.set_task_vector(0, dict(finetuned.named_parameters()))
    head, x = nn.Conv2d(6, 5, 1), torch.randn(12, 3, 4, 4)
    with torch.no_grad():
        teacher = head(finetuned(x))
    encode = lambda params, batch: functional_call(encoder, dict(params), (batch,))  # noqa: E731
    return merger, encode, [TaskState(name="segmentation", inputs=TensorInputs(x), teacher=teacher, head=head)]


def test_a_dense_task_learns_and_its_filter_counts_pixels():
    merger, encode, states = _dense_toy()
    assert states[0].outputs_per_sample == 16 and not states[0].is_regression
    trainer = _trainer(merger, encode, states, confidence_filter=True, max_steps=20, batch_size=4)
    first = trainer.task_loss(0, merger()).item()
    stats = trainer.run()
    assert stats.samples_seen["segmentation"] == (1 + 20) * 4 * 16  # positions, the first batch above included
    assert 0.0 < stats.dropped_fraction()["segmentation"] < 1.0
    assert stats.final_loss["segmentation"] < first


def test_a_task_with_a_fixed_objective_uses_it_and_is_not_filtered():
    merger, encode, states = _dense_toy()
    states[0].objective = "cosine"  # e.g. surface normals
    stats = _trainer(merger, encode, states, confidence_filter=True, max_steps=3, batch_size=4, loss="ce").run()
    assert stats.dropped_fraction()["segmentation"] == 0.0
    student = states[0].head(encode(merger(), states[0].inputs.tensor[:4]))
    cosine = 1 - F.cosine_similarity(student, states[0].teacher[:4], dim=1).mean()
    assert 0.0 < cosine.item() < 2.0 and stats.optimizer_steps == 3


def test_same_seed_gives_identical_results():
    results = []
    for _ in range(2):
        merger, encode, states = _toy()
        _trainer(merger, encode, states, max_steps=3).run()
        results.append(_snapshot(merger, states))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_nothing_to_train_is_refused():
    merger, encode, states = _toy()
    with pytest.raises(ValueError, match="Nothing to train"):
        _trainer(merger, encode, states, train_coefficients=False, train_tinted_layer=False)


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "fused",
    [None, True],
    ids=["host-check", "fused"],
)
def test_resuming_a_saved_state_is_bitwise_identical_to_an_uninterrupted_run(fused):
    import io

    merger, encode, states = _toy()
    options = dict(max_steps=4, confidence_filter=True, fused_optimizer=fused, plugin=True)
    uninterrupted = _trainer(merger, encode, states, **options)
    expected_stats = uninterrupted.run()
    expected = _snapshot(merger, states)

    saved = {}

    def stop_after_five(trainer):
        if trainer.visits == 5:  # mid-iteration
            buffer = io.BytesIO()
            torch.save(trainer.state_dict(), buffer)
            saved["state"] = buffer.getvalue()
            raise _Stop

    merger, encode, states = _toy()
    with pytest.raises(_Stop):
        _trainer(merger, encode, states, **options).run(on_visit=stop_after_five)

    merger, encode, states = _toy()  # a fresh process: same initial state, then the checkpoint
    resumed = _trainer(merger, encode, states, **options)
    resumed.load_state_dict(torch.load(io.BytesIO(saved["state"]), weights_only=False))
    stats = resumed.run()
    actual = _snapshot(merger, states)
    assert torch.equal(expected[0], actual[0])
    assert all(torch.equal(a, b) for a, b in zip(expected[1], actual[1]))
    assert (stats.optimizer_steps, stats.skipped_steps, stats.samples_dropped) == (
        expected_stats.optimizer_steps,
        expected_stats.skipped_steps,
        expected_stats.samples_dropped,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_inputs_are_gathered_to_cuda_through_pinned_memory():
    """The fallback when cached inputs do not fit on the GPU: rows staged in pinned memory, copied
    asynchronously; many gathers in flight must each deliver their own rows."""
    from fusion_bench_tinting.core.data import Uint8ImageInputs

    pixels = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.3, 0.25])
    for inputs, expected in [
        (TensorInputs(pixels.float()), pixels.float()),
        (Uint8ImageInputs(pixels, mean, std), (pixels.float() / 255 - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)),
    ]:
        inputs = inputs.to(torch.device("cpu"))
        indices = [torch.randperm(64)[:16] for _ in range(20)]
        gathered = [inputs.gather(index, torch.device("cuda"), torch.float32) for index in indices]
        for index, rows in zip(indices, gathered):
            assert rows.device.type == "cuda"
            torch.testing.assert_close(rows.cpu(), expected[index])


def test_tint_l2_adds_the_penalty_towards_the_start_and_holds_the_heads_near_it():
    merger, encode, states = _toy()
    trainer = _trainer(merger, encode, states, tint_l2=4.0)
    plain = _trainer(*_toy(), tint_l2=0.0)
    with torch.no_grad():
        states[1].head.weight.add_(0.5)  # theta - theta_start = 0.5 on every weight
    loss = trainer.task_loss(1, trainer.merged())
    data_loss = plain.task_loss(1, plain.merged())  # the same batch from the same seeded sampler
    expected = 4.0 / 2 * 0.5**2 * states[1].head.weight.numel()
    assert loss.item() == pytest.approx(data_loss.item() + expected, rel=1e-5)

    def drift(tint_l2):
        merger, encode, states = _toy()
        start = [s.head.weight.detach().clone() for s in states]
        _trainer(merger, encode, states, tint_l2=tint_l2, max_steps=30).run()
        return sum((s.head.weight - w).norm().item() for s, w in zip(states, start))

    assert drift(50.0) < 0.5 * drift(0.0)
