"""``evaluate_on_cached_inputs``: our CLIP task pools evaluate on the inputs the adaptation preprocessed,
with the same results as decoding the test sets again, and only where they are that test set."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli, task_accuracies

from fusion_bench.dataset.image_dataset import ImageClassificationDataset

from fusion_bench_tinting.data import TensorInputs
from fusion_bench_tinting.evaluation.task_aware import cached_test_batches, evaluation_shard


def _counting_decodes(monkeypatch):
    calls = {"n": 0}
    original = ImageClassificationDataset.__getitem__

    def counted(self, index):
        calls["n"] += 1
        return original(self, index)

    monkeypatch.setattr(ImageClassificationDataset, "__getitem__", counted)
    return calls


@pytest.mark.parametrize("suite, input_dtype", [("tiny-clip_TA4", "float32"), ("tiny-openclip_TA4", "uint8")])
def test_cached_evaluation_gives_the_decoded_evaluation_s_results(tiny_suites, tmp_path, monkeypatch, suite, input_dtype):
    config = ["--config-dir", str(tiny_suites / "config"), "method=model_tinting", f"modelpool={suite}",
              f"taskpool={suite}", "method.max_steps=3", "method.reuse_cache=false", f"method.input_dtype={input_dtype}"]
    decoded = run_cli(config, tmp_path / "decoded")
    decodes = _counting_decodes(monkeypatch)
    cached = run_cli([*config, "method.evaluate_on_cached_inputs=true"], tmp_path / "cached")
    test_images = 4 * 128
    # the adaptation's one pass over every test image, three checked samples per task, no second pass
    assert decodes["n"] == test_images + 4 * 3
    assert task_accuracies(cached) == task_accuracies(decoded)
    for task in task_accuracies(decoded):
        assert cached[task]["loss"] == pytest.approx(decoded[task]["loss"], abs=1e-5)


class _Dataset:
    """An ``ImageClassificationDataset``-like test set over a labelled Hugging Face-like table."""

    class _Table(list):
        column_names = ["image", "label"]

        def __getitem__(self, key):
            return [row["label"] for row in self] if key == "label" else list.__getitem__(self, key)

    def __init__(self, images, labels, shift=0.0):
        self.images, self.shift = images, shift
        self.dataset = self._Table({"image": None, "label": int(y)} for y in labels)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index] + self.shift, self.dataset[index]["label"]


def test_cached_batches_only_for_the_same_test_set():
    images, labels = torch.rand(10, 3, 4, 4), torch.randint(0, 3, (10,))
    inputs = TensorInputs(images.half())
    batches = list(cached_test_batches(inputs, _Dataset(images, labels), 4, torch.device("cpu")))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.allclose(torch.cat([x for x, _ in batches]), images, atol=2e-3)
    assert cached_test_batches(inputs, _Dataset(images, labels, shift=0.05), 4, torch.device("cpu")) is None  # other preprocessing
    assert cached_test_batches(inputs, _Dataset(images[:9], labels[:9]), 4, torch.device("cpu")) is None  # other size
    unlabelled = _Dataset(images, labels)
    unlabelled.dataset.column_names = ["image"]
    assert cached_test_batches(inputs, unlabelled, 4, torch.device("cpu")) is None  # labels need decoding


def test_cached_batches_are_sharded_as_the_data_parallel_decoding_loader():
    """With N processes each takes the samples Fabric's DistributedSampler gives it in the decoding loader
    (the last shard padded with the first samples, so every process runs as many batches)."""
    from torch.utils.data import DistributedSampler

    images, labels = torch.rand(11, 3, 4, 4), torch.arange(11)
    inputs, dataset = TensorInputs(images), _Dataset(images, labels)
    shards = []
    for rank in range(3):
        batches = list(cached_test_batches(inputs, dataset, 2, torch.device("cpu"), evaluation_shard(11, rank, 3)))
        assert [len(y) for _, y in batches] == [2, 2]
        shard = torch.cat([y for _, y in batches])
        assert shard.tolist() == list(DistributedSampler(dataset, num_replicas=3, rank=rank, shuffle=False))
        assert torch.equal(torch.cat([x for x, _ in batches]), images[shard])
        shards.append(shard)
    assert sorted(torch.cat(shards).tolist()) == sorted(list(range(11)) + [0])  # 12 = 3 x 4: sample 0 twice
