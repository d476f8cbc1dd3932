"""Data-parallel adaptation: 2 CPU processes (gloo) make the same updates as one process with the same
global batch; and the real CLI runs with ``fabric.devices=2``."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import run_cli_subprocess, task_accuracies
from datasets import load_from_disk
from safetensors.torch import load_file
from test_adaptation import _toy

from fusion_bench_tinting.core.adaptation import AdaptationOptions, TintingTrainer
from fusion_bench_tinting.data_parallel import ProcessShare


def _sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor


def _adapt(data_parallel: ProcessShare, plusplus: bool) -> dict:
    """Three iterations on the toy tasks; the summed gradients of the first step and the final state."""
    merger, encode, states = _toy(seed=0)
    trainer = TintingTrainer(
        merger,
        encode,
        states,
        AdaptationOptions(max_steps=3, lr=0.05, batch_size=8, confidence_filter=plusplus),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        data_parallel=data_parallel,
    )
    record = {}

    def first_gradients(trainer):
        if "coefficients_grad" not in record and merger.coefficients.grad is not None:
            record["coefficients_grad"] = merger.coefficients.grad.clone()
            record["heads_grad"] = torch.cat(
                [p.grad.reshape(-1) for s in states for p in s.head.parameters() if p.grad is not None]
            )

    stats = trainer.run(on_visit=first_gradients)
    record["coefficients"] = merger.coefficients.detach().clone()
    record["heads"] = torch.cat([p.detach().reshape(-1) for s in states for p in s.head.parameters()])
    record["final_loss"] = torch.tensor(list(stats.final_loss.values()))
    record["dropped"] = torch.tensor(list(stats.samples_dropped.values()), dtype=torch.float)
    return record


def _worker(rank: int, world_size: int, port: int, folder: str, plusplus: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        record = _adapt(ProcessShare(rank, world_size, _sum_across_processes), plusplus)
        if rank == 0:
            torch.save(record, os.path.join(folder, "parallel.pt"))
        dist.barrier()  # neither process tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("plusplus", [False, True])
def test_two_processes_make_the_same_updates_as_one(tmp_path, plusplus):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), plusplus), nprocs=2, join=True)
    parallel = torch.load(tmp_path / "parallel.pt")
    single = _adapt(ProcessShare(), plusplus)
    # the first step's summed gradients equal the single process's up to float summation order
    assert torch.allclose(parallel["coefficients_grad"], single["coefficients_grad"], atol=1e-6, rtol=1e-5)
    assert torch.allclose(parallel["heads_grad"], single["heads_grad"], atol=1e-6, rtol=1e-5)
    for key in ("coefficients", "heads", "final_loss"):
        assert torch.allclose(parallel[key], single[key], atol=1e-4), key
    assert torch.equal(parallel["dropped"], single["dropped"])


def test_data_parallel_slices_cover_the_global_batch_once():
    batch = torch.arange(11)
    slices = [ProcessShare(rank, 3).local(batch) for rank in range(3)]
    assert sorted(torch.cat(slices).tolist()) == batch.tolist()
    assert max(s.numel() for s in slices) - min(s.numel() for s in slices) <= 1


@pytest.mark.slow
def test_cli_with_two_cpu_processes_matches_one_process(tiny_suites, tmp_path):
    """``fabric.devices=2 fabric.strategy=ddp``: Fabric launches the second process; the saved tinted
    heads match a one-process run's. Coefficients whose gradients are near zero can differ by a fraction
    of one Adam step (Adam divides by the gradient's magnitude), so most, not all, match tightly.
    With an empty cache, only the first process preprocesses; the second reads what it wrote. The saved
    predictions gather both processes' shares of every test set in test-set order."""
    config = [
        "--config-dir",
        str(tiny_suites / "config"),
        "method=model_tinting",
        "modelpool=tiny-clip_TA4",
        "taskpool=tiny-clip_TA4",
        "method.max_steps=5",
        "method.batch_size=16",
        "method.lr=0.001",
    ]
    run_cli_subprocess(config, tmp_path / "one")
    data_parallel = [*config, "fabric.devices=2", "fabric.strategy=ddp"]
    cache = {"FUSION_BENCH_CACHE_DIR": str(tmp_path / "fresh_cache")}
    two = run_cli_subprocess(
        [*data_parallel, "+taskpool.save_predictions=true", "method.checkpoint_every=4"], tmp_path / "two", env=cache
    )
    # checkpoints through fabric.save by both processes, written once: 20 task steps, every 4th, newest 2 kept
    checkpoints = sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-16.pt", "checkpoint-20.pt"]
    assert two.stderr.count("Model Tinting adaptation: 0/") == 1  # one progress bar: the global-zero process's
    second_process = (tmp_path / "two" / "train_ddp_process_1.log").read_text()
    assert second_process.count("read from this node's first process") == 4  # every task
    report = json.loads((tmp_path / "two" / "program_report.json").read_text())
    for task, accuracy in task_accuracies(report).items():  # saved predictions: both shards, in test-set order
        saved = load_file(tmp_path / "two" / "predictions" / f"{task}.safetensors")
        expected_labels = load_from_disk(str(tiny_suites / "data" / task / "test"))["label"]
        assert saved["labels"].tolist() == expected_labels
        assert (saved["logits"].argmax(-1) == saved["labels"]).float().mean().item() == pytest.approx(accuracy)
    assert "from the cache (" not in second_process  # no ready entry: the first process made them all
    assert len(list((tmp_path / "fresh_cache" / "model_tinting").glob("*.safetensors"))) == 4
    one = load_file(tmp_path / "one" / "model_tinting.safetensors")
    two = load_file(tmp_path / "two" / "model_tinting.safetensors")
    for key in one:
        if key != "coefficients":
            assert torch.allclose(one[key], two[key], atol=1e-5), key
    close = (one["coefficients"] - two["coefficients"]).abs() <= 1e-5
    assert close.float().mean() > 0.9
    assert (one["coefficients"] - two["coefficients"]).abs().max() <= 5 * 0.001  # at most the 5 steps' span


@pytest.mark.slow
def test_text_evaluation_is_shared_by_the_processes_with_the_one_process_figures(tiny_text, tmp_path):
    """Our GLUE task pool under ``fabric.devices=2``: each process evaluates half of every test set; the
    halves are gathered back in order, so the scores (Matthews, Spearman, ...) and the saved predictions
    are exactly the one-process ones."""
    config = [
        "--config-dir",
        str(tiny_text / "config"),
        "method=task_arithmetic",
        "modelpool=tiny-roberta_glue",
        "taskpool=tiny-roberta_glue",
        "+taskpool.save_predictions=true",
    ]
    run_cli_subprocess(config, tmp_path / "one")
    run_cli_subprocess([*config, "fabric.devices=2", "fabric.strategy=ddp"], tmp_path / "two")
    one, two = (json.loads((tmp_path / run / "program_report.json").read_text()) for run in ("one", "two"))
    tasks = [
        task for task, result in one.items() if isinstance(result, dict) and "score" in result and task != "average"
    ]
    assert tasks and all(two[task]["score"] == one[task]["score"] for task in tasks)
    assert (tmp_path / "two" / "train_ddp_process_1.log").read_text().count("this process's 1/2 share") == len(tasks)
    for task in tasks:
        saved_one, saved_two = (
            load_file(tmp_path / run / "predictions" / f"{task}.safetensors") for run in ("one", "two")
        )
        assert torch.equal(saved_one["labels"], saved_two["labels"])
        torch.testing.assert_close(saved_two["logits"], saved_one["logits"], atol=1e-5, rtol=0)
