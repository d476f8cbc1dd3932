"""Nothing a run reads is trusted blindly: no code runs from a checkpoint, non-finite values stop the run where
they enter, a damaged cache entry is rebuilt, an unwritable cache or log folder loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch
from conftest import build_tinting, cpu_fabric, load_pool
from safetensors.torch import load_file, save_file
from test_adaptation import _toy, _trainer

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.caching import TaskCache
from fusion_bench_tinting.checkpointing import CheckpointStore, resume_state
from fusion_bench_tinting.core.data import TensorInputs
from fusion_bench_tinting.core.errors import NonFiniteError, SaveError, TintingConfigError
from fusion_bench_tinting.core.weights_io import save_tinting
from fusion_bench_tinting.saved_runs import load_tinting
from fusion_bench_tinting.stale_files import remove_stale_temporaries


def _run(pool, **options):
    algorithm = build_tinting(**{"max_steps": 2, "reuse_cache": False, **options})
    algorithm.fabric = cpu_fabric()
    return algorithm.run(pool)


# ----- 1. no code runs from a checkpoint ---------------------------------------------------------
class _Payload:
    """Unpickling this runs ``os.system``: what a crafted checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"fingerprint": {}, "trainer": _Payload(marker)}, folder / "checkpoint-5.pt")
    with pytest.raises(
        TintingConfigError, match=r"Refusing checkpoint .*checkpoint-5\.pt: it holds objects other than tensors"
    ):
        resume_state(str(tmp_path / "run"), {}, max_steps=10)
    assert not marker.exists()


def test_a_checkpoint_of_tensors_and_plain_data_loads_safely(tmp_path):
    store = CheckpointStore(tmp_path)
    generator = torch.Generator().manual_seed(3)
    state = {
        "fingerprint": {"tasks": ["a"], "method": {"lr": 0.1}},
        "trainer": {
            "order": None,
            "seen": [1, 2],
            "generator": generator.get_state(),
            "coefficients": torch.ones(2, 3),
        },
    }
    store.save(state, 4)
    loaded, path = store.load_latest()
    assert path.name == "checkpoint-4.pt" and torch.equal(loaded["trainer"]["generator"], generator.get_state())


# ----- 2. non-finite values stop the run where they enter ----------------------------------------
def test_nan_in_one_finetuned_model_is_refused_before_adaptation_naming_task_and_tensor(tiny_suites, tmp_path):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    source = pool._models["eurosat"]
    copy = tmp_path / "eurosat_nan"
    shutil.copytree(source, copy)
    weights = load_file(str(copy / "model.safetensors"))
    name = next(n for n in weights if "mlp.fc1.weight" in n)
    weights[name][0, 0] = float("nan")
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    pool._models["eurosat"] = str(copy)
    with pytest.raises(
        NonFiniteError, match=rf"model of task 'eurosat' \({copy}\): tensor '.*mlp\.fc1\.weight' holds 1 NaN"
    ):
        _run(pool)


def test_saved_weights_with_nan_are_refused_on_load(tmp_path):
    path = str(tmp_path / "model_tinting.safetensors")
    save_tinting(
        path,
        task_names=["a"],
        coefficient_groups=["g"],
        coefficients=torch.tensor([[float("nan")]]),
        tinted={"a": {"weight": torch.ones(2, 2)}},
        tinted_layer="head",
    )
    with pytest.raises(NonFiniteError, match=r"weights=.*tensor 'coefficients' holds 1 NaN"):
        load_tinting(path)


@pytest.mark.parametrize("fused", [False, True], ids=["host check", "fused step cancelled on the device"])
def test_a_non_finite_loss_stops_the_run_naming_task_and_step_before_any_parameter_changes(fused):
    merger, encode, states = _toy()
    states[1].inputs.tensor[:, 0] = float("nan")  # task1's inputs
    trainer = _trainer(merger, encode, states, fused_optimizer=fused, max_steps=3, log_every=1)
    with pytest.raises(
        NonFiniteError, match=r"the loss of task 'task1' was NaN or infinite at step \d+ \(iteration \d+\)"
    ):
        trainer.run()
    assert torch.isfinite(merger.coefficients).all()
    assert all(torch.isfinite(s.head.weight).all() for s in states)


def test_the_report_holds_null_for_nan(tmp_path):
    from fusion_bench_tinting.evaluation.task_aware import finite_or_none

    report = finite_or_none({"a": {"accuracy": 0.5, "ece": float("nan")}, "b": [float("inf"), 1.0]})
    assert json.loads(json.dumps(report, allow_nan=False)) == {"a": {"accuracy": 0.5, "ece": None}, "b": [None, 1.0]}


# ----- 3. a damaged cache entry is rebuilt -------------------------------------------------------
def _entry(cache, key, rows=30, teacher_rows=None):
    inputs = TensorInputs(torch.arange(rows * 4, dtype=torch.float32).reshape(rows, 4))
    cache.save(key, inputs, torch.randn(rows if teacher_rows is None else teacher_rows, 3))
    return cache.path(key)


def test_altered_bytes_behind_an_intact_header_are_found_and_the_entry_rebuilt(tmp_path, caplog):
    cache = TaskCache(tmp_path)
    path = _entry(cache, "k1")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a tensor byte: the header still parses
    path.write_bytes(bytes(data))
    assert cache.load("k1", 30) is None
    assert "do not match their checksum" in caplog.text
    _entry(cache, "k1")
    assert cache.load("k1", 30) is not None


def test_another_tasks_entry_under_the_key_and_entries_of_the_wrong_shape_are_refused(tmp_path, caplog):
    cache = TaskCache(tmp_path)
    shutil.copy(_entry(cache, "other"), cache.path("mine"))
    assert cache.load("mine", 30) is None and "written under key 'other'" in caplog.text
    _entry(cache, "short", rows=300, teacher_rows=100)
    assert cache.load("short", 300) is None and "teacher outputs have shape (100, 3) for 300 inputs" in caplog.text
    _entry(cache, "stale", rows=30)
    assert cache.load("stale", 40) is None and "it holds 30 inputs, the task has 40" in caplog.text


def test_reuse_cache_false_overwrites_a_damaged_entry(tiny_suites, monkeypatch, tmp_path):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    _run(pool, reuse_cache=True, max_steps=0)
    entries = sorted((tmp_path / "cache" / "model_tinting").glob("*.safetensors"))
    assert len(entries) == 4
    entries[0].write_bytes(entries[0].read_bytes()[:-8] + b"\0" * 8)
    key = entries[0].stem
    assert TaskCache(entries[0].parent).load(key) is None
    _run(load_pool(tiny_suites, "tiny-clip_TA4"), reuse_cache=False, max_steps=0)
    assert TaskCache(entries[0].parent).load(key) is not None


# ----- 4. a cache that cannot be written is a warning --------------------------------------------
def test_a_cache_that_cannot_be_written_lets_the_run_go_on(tiny_suites, monkeypatch, caplog):
    import fusion_bench_tinting.caching as caching

    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(caching, "write_atomically", full_disk)
    model = _run(load_pool(tiny_suites, "tiny-clip_TA4"), reuse_cache=True, max_steps=1)
    assert model is not None
    assert (
        "could not be written (OSError: [Errno 28] No space left on device); the run goes on without it" in caplog.text
    )


def test_stale_temporaries_are_removed_by_the_next_writer_but_not_fresh_ones(tmp_path):
    stale, fresh = tmp_path / ".tmpAB12", tmp_path / "entry.safetensors.host.1.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 10 * 24 * 3600
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and fresh.exists()


# ----- 5. one line, naming the task and the file -------------------------------------------------
def test_images_of_mixed_sizes_are_refused_naming_the_task_and_the_test_set(tiny_suites, tmp_path):
    from datasets import load_from_disk

    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    processor = tmp_path / "processor"
    shutil.copytree(pool._processor, processor)
    settings = json.loads((processor / "processor_config.json").read_text())
    settings["image_processor"].update(do_resize=False, do_center_crop=False)
    (processor / "processor_config.json").write_text(json.dumps(settings))
    pool._processor = str(processor)
    mixed = tmp_path / "eurosat_mixed"
    dataset = load_from_disk(pool._test_datasets["eurosat"]["dataset_path"])
    dataset.map(lambda row, i: {"image": row["image"].resize((20 + i % 2 * 4, 20))}, with_indices=True).save_to_disk(
        str(mixed)
    )
    pool._test_datasets["eurosat"]["dataset_path"] = str(mixed)
    with pytest.raises(
        TintingConfigError,
        match=rf"test set of task 'eurosat' \({mixed}\) could not be read: .*images of different shapes",
    ):
        _run(pool)


# ----- 6. the final save is atomic ---------------------------------------------------------------
def test_a_failed_final_save_leaves_no_partial_file_and_names_the_last_checkpoint(tiny_suites, tmp_path, monkeypatch):
    import fusion_bench_tinting.core.weights_io as weights_io

    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "model_tinting.safetensors").write_bytes(b"an earlier result")

    def fails_midway(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights_io, "save_file", fails_midway)
    algorithm = ModelTintingAlgorithm(max_steps=2, checkpoint_every=4)
    algorithm.fabric = cpu_fabric()
    monkeypatch.setattr(type(algorithm), "log_dir", property(lambda self: str(log_dir)))
    with pytest.raises(
        SaveError,
        match=r"could not be written .*No space left.*The last checkpoint, .*checkpoint-8\.pt, stays: "
        rf"continue with method\.resume={log_dir}",
    ):
        algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))
    assert (log_dir / "model_tinting.safetensors").read_bytes() == b"an earlier result"
    assert not list(log_dir.glob("*.tmp"))
