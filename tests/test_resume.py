"""Runs that survive interruption and reproduce exactly (CPU)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time

import pytest
import torch
from conftest import build_tinting, cpu_fabric, load_pool, run_cli
from safetensors.torch import load_file

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.checkpointing import CheckpointStore
from fusion_bench_tinting.core.errors import TintingConfigError


def _without_timing(report):
    report = dict(report)
    timings = ("adaptation_time_s", "first_iteration_s")
    report["adaptation"] = {k: v for k, v in report["adaptation"].items() if k not in timings}
    return report


def test_same_seed_same_config_gives_identical_reports(tiny_suites, tmp_path):
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting_plusplus",
        "modelpool=tiny-clip_TA4",
        "method.max_steps=15",
    ]
    first = run_cli(config, tmp_path / "first")
    second = run_cli(config, tmp_path / "second")  # the second one also reads the teacher cache
    assert _without_timing(first) == _without_timing(second)
    assert first["adaptation"]["seed"] == 42
    assert {"python", "torch", "transformers", "fusion-bench"} <= set(first["adaptation"]["versions"])


def _assert_resumes_to_the_reference(command, reference, tmp_path, interrupted):
    """Resume ``interrupted`` with ``command``: the saved result equals the uninterrupted ``reference`` run's,
    bitwise."""
    subprocess.run(
        [*command, f"path.log_dir={tmp_path / 'resumed'}", f"method.resume={interrupted}"],
        check=True,
        capture_output=True,
    )
    expected = load_file(str(reference / "model_tinting.safetensors"))
    actual = load_file(str(tmp_path / "resumed" / "model_tinting.safetensors"))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key  # bitwise on the CPU


def _interruptible(tiny_suites):
    """A run long enough to be interrupted (about 0.1 s per step on one CPU core), without evaluation."""
    return [
        "fusion_bench",
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "taskpool=dummy",
        "method.max_steps=100",
        "fabric.accelerator=cpu",
        "print_config=false",
    ]


@pytest.fixture(scope="module")
def uninterrupted(tiny_suites, tmp_path_factory):
    """The interruptible run, uninterrupted: the reference both interruption tests resume to."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(
        [*_interruptible(tiny_suites), f"path.log_dir={folder}"], check=True, capture_output=True, cwd=folder
    )
    return folder


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(tiny_suites, uninterrupted, tmp_path):
    common = [*_interruptible(tiny_suites), "method.checkpoint_every=20"]
    killed = subprocess.Popen(
        [*common, f"path.log_dir={tmp_path / 'killed'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while not list(checkpoints.glob("checkpoint-*.pt")) and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "model_tinting.safetensors").exists()

    _assert_resumes_to_the_reference(common, uninterrupted, tmp_path, tmp_path / "killed")


def test_truncated_checkpoint_is_skipped_for_the_previous_one(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    store.save({"value": torch.tensor([1.0])}, 10)
    newest = store.save({"value": torch.tensor([2.0])}, 20)
    newest.write_bytes(newest.read_bytes()[:40])  # e.g. a copy cut short
    state, path = store.load_latest()
    assert path.name == "checkpoint-10.pt" and state["value"].item() == 1.0
    assert "cannot be read" in caplog.text
    store.save({"value": torch.tensor([3.0])}, 30)
    store.save({"value": torch.tensor([4.0])}, 40)
    assert [p.name for p in store.files()] == ["checkpoint-20.pt", "checkpoint-30.pt", "checkpoint-40.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoints_go_through_fabric_save_and_load(tmp_path, monkeypatch):
    import lightning as L

    calls = []
    for name in ("save", "load"):
        original = getattr(L.Fabric, name)
        monkeypatch.setattr(
            L.Fabric, name, lambda self, *a, _o=original, _n=name, **k: calls.append(_n) or _o(self, *a, **k)
        )
    store = CheckpointStore(tmp_path, fabric=L.Fabric(accelerator="cpu", devices=1))
    store.save({"value": torch.tensor([5.0])}, 7)
    state, path = store.load_latest()
    assert calls == ["save", "load"] and path.name == "checkpoint-7.pt" and state["value"].item() == 5.0


class _TwoProcesses:
    """A Fabric stand-in for the hook: two processes whose collective stop decision is ``decision``."""

    world_size = 2

    def __init__(self, decision: bool):
        self.decision, self.asked = decision, []
        self.strategy = self

    def reduce_boolean_decision(self, local: bool, all: bool = True) -> bool:
        self.asked.append(local)
        return self.decision


def test_with_several_processes_the_stop_is_decided_together_at_check_steps():
    from types import SimpleNamespace

    from fusion_bench_tinting.checkpointing import checkpoint_hook
    from fusion_bench_tinting.interrupts import AdaptationInterrupted

    trainer = SimpleNamespace(visits=0)
    # this process saw no signal, the other did: both stop at the next check step (every 3rd)
    fabric = _TwoProcesses(decision=True)
    hook = checkpoint_hook(None, 0, {}, SimpleNamespace(requested=False, name="SIGINT"), fabric, stop_check_every=3)
    for visits in (1, 2):
        trainer.visits = visits
        hook(trainer)
    trainer.visits = 3
    with pytest.raises(AdaptationInterrupted):
        hook(trainer)
    assert fabric.asked == [False]  # asked once, at the check step
    # a signal on this process alone, that the other has not seen: no process stops
    hook = checkpoint_hook(None, 0, {}, SimpleNamespace(requested=True, name="SIGINT"), _TwoProcesses(False), 1)
    hook(trainer)


def test_resume_with_another_configuration_is_refused(tiny_suites, tmp_path):
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "taskpool=dummy",
    ]
    run_cli([*config, "method.max_steps=3", "method.checkpoint_every=4"], tmp_path / "run")
    algorithm = ModelTintingAlgorithm(max_steps=3, lr=0.02, resume=str(tmp_path / "run"))
    algorithm.fabric = cpu_fabric()
    with pytest.raises(TintingConfigError, match=r"Refusing to resume .*method\.lr: checkpoint 'auto', now 0\.02"):
        algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    del pool._models["cifar10"]
    algorithm = ModelTintingAlgorithm(max_steps=3, resume=str(tmp_path / "run"))
    algorithm.fabric = cpu_fabric()
    with pytest.raises(TintingConfigError, match="Refusing to resume .*tasks"):
        algorithm.run(pool)


def test_changed_model_file_invalidates_the_cached_teacher_outputs(tiny_suites, tmp_path):
    import shutil

    from transformers import CLIPVisionModel

    suite = tmp_path / "suite"
    shutil.copytree(tiny_suites / "hf_clip", suite)
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    for task in pool.model_names:
        pool._models[task] = str(suite / task)
    cache = tmp_path / "cache" / "model_tinting"

    def run():
        algorithm = ModelTintingAlgorithm(max_steps=0)
        algorithm.fabric = cpu_fabric()
        algorithm.run(pool)
        return sorted(p.name for p in cache.glob("*.safetensors"))

    first = run()
    assert len(first) == 4
    assert run() == first  # unchanged inputs: every entry reused, none added
    model = CLIPVisionModel.from_pretrained(suite / "stl10")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    time.sleep(0.01)
    model.save_pretrained(suite / "stl10")
    after = run()
    assert len(after) == 5 and set(first) < set(after)  # a new entry for the changed task only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_ends_within_last_bits_of_an_uninterrupted_run(tiny_suites, tmp_path):
    """What the README promises for a GPU: a run resumed from a middle checkpoint ends where the uninterrupted
    one does, up to non-deterministic kernels. Prints the largest difference measured."""
    import shutil

    import lightning as L
    from lightning.fabric.loggers import TensorBoardLogger

    from fusion_bench_tinting.core.weights_io import WEIGHTS_FILE

    def run(folder, **options):
        algorithm = build_tinting(max_steps=30, checkpoint_every=40, keep_checkpoints=10, **options)
        algorithm.fabric = L.Fabric(
            accelerator="cuda", devices=1, loggers=TensorBoardLogger(root_dir=str(folder), name="", version="")
        )
        algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))
        return load_file(str(folder / WEIGHTS_FILE))

    reference = run(tmp_path / "reference")
    middle = tmp_path / "middle" / "checkpoints"
    middle.mkdir(parents=True)
    shutil.copy(tmp_path / "reference" / "checkpoints" / "checkpoint-40.pt", middle)
    resumed = run(tmp_path / "resumed", resume=str(middle.parent))
    largest = max(float((reference[k].float() - resumed[k].float()).abs().max()) for k in reference)
    print(f"largest difference after resuming on {torch.cuda.get_device_name()}: {largest:.3g}")
    assert largest < 1e-4


def test_the_programs_seed_is_used_when_the_method_has_none(tiny_suites, tmp_path):
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "method.max_steps=3",
    ]
    program = run_cli([*config, "seed=5"], tmp_path / "program")
    method = run_cli([*config, "method.seed=5"], tmp_path / "method")
    both = run_cli([*config, "seed=5", "method.seed=7"], tmp_path / "both")
    assert program["adaptation"]["seed"] == 5 and method["adaptation"]["seed"] == 5 and both["adaptation"]["seed"] == 7
    saved = [load_file(str(tmp_path / run / "model_tinting.safetensors")) for run in ("program", "method", "both")]
    assert torch.equal(saved[0]["coefficients"], saved[1]["coefficients"])  # same seed, same run
    assert not torch.equal(saved[0]["coefficients"], saved[2]["coefficients"])


def test_a_finished_run_resumed_with_more_steps_equals_a_longer_run(tiny_suites, tmp_path):
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting_plusplus",
        "modelpool=tiny-clip_TA4",
        "taskpool=dummy",
        "method.checkpoint_every=1",
    ]
    run_cli([*config, "method.max_steps=6"], tmp_path / "long")
    run_cli([*config, "method.max_steps=3"], tmp_path / "short")
    run_cli([*config, "method.max_steps=6", f"method.resume={tmp_path / 'short'}"], tmp_path / "extended")
    long = load_file(str(tmp_path / "long" / "model_tinting.safetensors"))
    extended = load_file(str(tmp_path / "extended" / "model_tinting.safetensors"))
    assert long.keys() == extended.keys() and all(torch.equal(long[k], extended[k]) for k in long)
    with pytest.raises(AssertionError, match="exited with 2"):  # fewer steps than the checkpoint has done
        run_cli([*config, "method.max_steps=2", f"method.resume={tmp_path / 'short'}"], tmp_path / "shorter")


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_says_how_to_resume_and_resumes_bitwise(tiny_suites, uninterrupted, tmp_path):
    common = _interruptible(tiny_suites)
    errors = tmp_path / "output.txt"
    with open(errors, "w") as stderr:
        run = subprocess.Popen(
            [*common, f"path.log_dir={tmp_path / 'stopped'}"], stdout=stderr, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 300
        while "Model Tinting adaptation" not in errors.read_text() and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few steps in
        assert run.poll() is None, "the run finished before it could be interrupted; make it longer"
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=120) == 130
    lines = [line for line in errors.read_text().splitlines() if line.strip()]
    assert "Traceback" not in errors.read_text()
    assert lines[-1].startswith("Adaptation stopped by SIGINT; checkpoint written to ")
    printed = shlex.split(lines[-1].split("Continue with: ", 1)[1])
    assert printed[0] == "fusion_bench" and "method.max_steps=100" in printed  # the original overrides
    assert printed[-1] == f"method.resume={tmp_path / 'stopped'}" and os.path.isabs(printed[-1].split("=", 1)[1])
    assert len(list((tmp_path / "stopped" / "checkpoints").glob("checkpoint-*.pt"))) == 1  # checkpoint_every=0
    assert not (tmp_path / "stopped" / "model_tinting.safetensors").exists()

    # the printed command, pasted (from another folder), reaches the original max_steps, bitwise
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([*printed, f"path.log_dir={tmp_path / 'resumed'}"], check=True, capture_output=True, cwd=elsewhere)
    expected = load_file(str(uninterrupted / "model_tinting.safetensors"))
    actual = load_file(str(tmp_path / "resumed" / "model_tinting.safetensors"))
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    shorter = subprocess.run(
        [*printed[:-1], "method.max_steps=3", printed[-1], f"path.log_dir={tmp_path / 'short'}"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    said = " ".join(re.sub(r"\S+\.py:\d+", "", shorter.stdout + shorter.stderr).split())  # rich wraps log lines
    assert "The interrupted run asked for 100 iterations; this one stops at 3 (method.max_steps=3)" in said


def test_an_option_added_after_the_checkpoint_resumes_at_its_default_only():
    from fusion_bench_tinting.checkpointing import check_resumable, fingerprint
    from fusion_bench_tinting.methods import COMMAND_OPTIONS

    defaults = COMMAND_OPTIONS.defaults()  # the plugin's options (tint_l2 is one) with the core's
    old = fingerprint(["a"], {"pool": 1}, {"lr": 0.01})  # written before `tint_l2` existed
    check_resumable(old, fingerprint(["a"], {"pool": 1}, {"lr": 0.01, "tint_l2": 0.0}), "ckpt", defaults)
    with pytest.raises(TintingConfigError, match=r"method\.tint_l2: checkpoint 0\.0, now 0\.5"):
        check_resumable(old, fingerprint(["a"], {"pool": 1}, {"lr": 0.01, "tint_l2": 0.5}), "ckpt", defaults)
    with pytest.raises(TintingConfigError, match=r"method\.tint_l2 is new"):
        check_resumable(old, fingerprint(["a"], {"pool": 1}, {"lr": 0.01, "tint_l2": 0.0}), "ckpt")
