"""The methods through their Python API on the tiny suites (real FusionBench pools, real models)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import build_tinting, cpu_fabric, load_pool
from lightning.fabric.loggers import TensorBoardLogger
from safetensors.torch import load_file

from fusion_bench_tinting import ModelTintingAlgorithm, ModelTintingPlusPlus, TintedModel
from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.core.families import family_for
from fusion_bench_tinting.core.merging import ArchitectureMismatchError
from fusion_bench_tinting.core.weights_io import TINTED_LAYERS_FILE, WEIGHTS_FILE


def _run(pool, fabric=None, **options) -> TintedModel:
    options.setdefault("max_steps", 5)
    algorithm = build_tinting(**options)
    algorithm.fabric = fabric or cpu_fabric()
    return algorithm.run(pool)


def _logging_fabric(folder):
    import lightning as L

    return L.Fabric(accelerator="cpu", devices=1, loggers=TensorBoardLogger(root_dir=str(folder), name="", version=""))


@torch.no_grad()
def _predictions(model: TintedModel, pool) -> dict:
    family = family_for(pool, cpu_fabric())
    outputs = {}
    for task in model.task_names:
        inputs = family.adaptation_inputs(task, batch_size=64, num_workers=0, dtype=torch.float32)
        model.set_task(task)
        head = model.task_head(task) or family.load_head(task)
        outputs[task] = head(family.encode(model, inputs.tensor))
    return outputs


def test_block_tinting_changes_only_that_block_per_task(tiny_suites):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    model = _run(pool, tinted_layer=1, max_steps=3)
    prefix = "vision_model.encoder.layers.1."
    per_task = {}
    for task in model.task_names:
        model.set_task(task)
        assert model.task_head(task) is None  # the head stays the frozen zero-shot head
        per_task[task] = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    first, *others = list(per_task.values())
    for other in others:
        for name, value in first.items():
            if name.startswith(prefix):
                continue
            assert torch.equal(value, other[name]), name
        assert any(not torch.equal(first[n], other[n]) for n in first if n.startswith(prefix))
    assert model.report_extras["tinted_layer"] == "1"


def test_block_tinting_on_open_clip(tiny_suites):
    pool = load_pool(tiny_suites, "tiny-openclip_TA4")
    model = _run(pool, tinted_layer=0, max_steps=2)
    names = list(model.modulators["stl10"].block_names)
    assert names and all(n.startswith("model.visual.transformer.resblocks.0.") for n in names)


def test_save_then_load_gives_the_same_predictions(tiny_suites, tmp_path):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    adapted = _run(pool, fabric=_logging_fabric(tmp_path / "run"), max_steps=8)
    saved = tmp_path / "run" / WEIGHTS_FILE
    assert saved.exists()
    from omegaconf import OmegaConf

    config = OmegaConf.load(tmp_path / "run" / "model_tinting_config.yaml")
    assert (config.lr, config.max_steps, config.init_values, config.loss) == (0.01, 8, 0.3, "ce")  # `auto` resolved
    # the report is in the log folder too: FusionBench's own task pools do not copy it into theirs
    report = json.loads((tmp_path / "run" / "model_tinting_report.json").read_text())
    assert report["optimizer_steps"] == adapted.report_extras["optimizer_steps"] == 8 * 4
    assert report["method"] == "model_tinting"
    tensors = load_file(str(saved))
    assert tensors["coefficients"].shape[0] == 4
    assert {"tinted.eurosat.weight", "tinted.eurosat.bias"} <= set(tensors)

    loaded = _run(load_pool(tiny_suites, "tiny-clip_TA4"), weights=str(tmp_path / "run"), max_steps=8)
    assert "weights_loaded_from" in loaded.report_extras and "optimizer_steps" not in loaded.report_extras
    expected, actual = _predictions(adapted, pool), _predictions(loaded, pool)
    for task in expected:
        assert torch.allclose(expected[task], actual[task], atol=1e-5), task


def test_block_tinting_save_and_load_round_trip(tiny_suites, tmp_path):
    pool = load_pool(tiny_suites, "tiny-openclip_TA4")
    adapted = _run(pool, fabric=_logging_fabric(tmp_path / "run"), tinted_layer=1, max_steps=3)
    loaded = _run(load_pool(tiny_suites, "tiny-openclip_TA4"), weights=str(tmp_path / "run"), tinted_layer=1)
    expected, actual = _predictions(adapted, pool), _predictions(loaded, pool)
    for task in expected:
        assert torch.allclose(expected[task], actual[task], atol=1e-5), task


def test_save_pretrained_writes_encoder_and_tinted_layers(tiny_suites, tmp_path):
    from transformers import CLIPVisionModel

    model = _run(load_pool(tiny_suites, "tiny-clip_TA4"), max_steps=2)
    model.set_task("stl10")
    model.save_pretrained(str(tmp_path / "merged"))
    reloaded = CLIPVisionModel.from_pretrained(str(tmp_path / "merged"))
    for (name, a), (_, b) in zip(model.backbone.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(a, b), name
    layers = load_file(str(tmp_path / "merged" / TINTED_LAYERS_FILE))
    assert torch.equal(layers["cifar10.head.weight"], model.task_head("cifar10").weight)


def test_plusplus_reports_dropped_fraction_and_sparsity(tiny_suites):
    algorithm = ModelTintingPlusPlus(max_steps=10)
    algorithm.fabric = cpu_fabric()
    model = algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))
    report = model.report_extras
    assert report["method"] == "model_tinting_plusplus"
    assert set(report["filter_dropped_fraction"]) == {"eurosat", "stl10", "fashion_mnist", "cifar10"}
    assert all(0.0 <= v <= 1.0 for v in report["filter_dropped_fraction"].values())
    assert 0.0 <= report["coefficients_below_1e-5"] <= 1.0
    assert report["optimizer_steps"] + report["skipped_steps"] == 40
    assert report["adaptation_time_s"] > 0


def test_init_values_auto_and_explicit(tiny_suites):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    assert _run(pool, max_steps=0).report_extras["init_values"] == 0.3
    model = _run(pool, max_steps=0, init_values=0.5, clamp_weights=False)
    assert model.report_extras["mean_coefficient_per_task"]["stl10"] == pytest.approx(0.5)


# ----- bad input ------------------------------------------------------------------------------
def test_task_without_test_dataset_is_refused(tiny_suites):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    del pool._test_datasets["stl10"]
    with pytest.raises(
        TintingConfigError,
        match=r"adaptation_data=test: task .stl10. has no test dataset in the model pool \(it has \[.train.\]\)",
    ):
        _run(pool)


def test_task_unknown_to_the_clip_registry_is_refused(tiny_suites):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    pool._models["my_pets"] = pool._models.pop("stl10")
    pool._test_datasets["my_pets"] = pool._test_datasets.pop("stl10")
    with pytest.raises(TintingConfigError, match="Task 'my_pets' has no class names and templates"):
        _run(pool)


def test_open_clip_task_without_head_is_refused(tiny_suites):
    pool = load_pool(tiny_suites, "tiny-openclip_TA4")
    del pool._classification_heads["cifar10"]
    with pytest.raises(TintingConfigError, match="Task 'cifar10' has no classification head"):
        _run(pool)


def test_finetuned_model_with_another_architecture_is_refused(tiny_suites, tmp_path):
    from fusion_bench_tinting.testing.tiny_suites import tiny_hf_clip

    clip, _ = tiny_hf_clip(seed=1)
    config = copy.deepcopy(clip.config.vision_config)
    config.intermediate_size = 48
    from transformers import CLIPVisionModel

    CLIPVisionModel(config).save_pretrained(tmp_path / "other")
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    pool._models["fashion_mnist"] = str(tmp_path / "other")
    with pytest.raises(
        ArchitectureMismatchError,
        match=rf"'fashion_mnist' \({tmp_path / 'other'}\) does not have the "
        "pretrained model's architecture.*shape mismatch",
    ) as error:
        _run(pool)
    assert isinstance(error.value, TintingConfigError) and "\n" not in str(error.value)  # one line from the CLI, exit 2


def test_tinted_block_out_of_range_is_refused(tiny_suites):
    with pytest.raises(
        TintingConfigError, match="tinted_layer=2 is out of range: the encoder has 2 transformer blocks"
    ):
        _run(load_pool(tiny_suites, "tiny-clip_TA4"), tinted_layer=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"loss": "hinge"}, r"method.loss='hinge': one of \['ce'"),
        ({"select_on_holdout": 0.7}, r"select_on_holdout=0.7: a number in \[0, 0.5\)"),
        ({"tinted_layer": "neck"}, "tinted_layer='neck'"),
        ({"tinted_layer": -1}, r"index \(>= 0\)"),
        ({"train_coefficients": False, "train_tinted_layer": False}, "nothing to adapt"),
        ({"input_dtype": "int8"}, "input_dtype='int8'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"compile_step": "turbo"}, "compile_step='turbo'"),
        # values a command line passes through unconverted, or that would silently change or waste the run
        ({"confidence_filter": "maybe"}, "method.confidence_filter='maybe': true or false"),
        ({"lr": 0}, r"method.lr=0: 'auto' or a number > 0"),
        ({"lr": -1.0}, r"method.lr=-1.0: 'auto' or a number > 0"),
        ({"max_steps": -1}, r"method.max_steps=-1: 'auto' or an integer >= 0"),
        ({"max_steps": "abc"}, r"method.max_steps='abc'"),
        ({"init_values": 2}, r"init_values=2 lies outside the clamp range \[0, 1\]"),
        ({"init_values": -1.5, "init_from": "lot"}, r"outside the clamp range \[-1, 1\]"),
        ({"seed": "x"}, r"method.seed='x': null \(the program's seed\) or an integer"),
        ({"checkpoint_every": -5}, "checkpoint_every=-5"),
    ],
)
def test_bad_options_are_refused_when_the_method_is_constructed(options, message):
    with pytest.raises(TintingConfigError, match=message):
        ModelTintingAlgorithm(**options)  # before any model pool exists


def test_init_values_outside_the_range_are_accepted_without_the_clamp():
    assert ModelTintingAlgorithm(init_values=2, clamp_weights=False).init_values == 2


def test_unsupported_model_pool_is_refused():
    from fusion_bench import BaseModelPool

    with pytest.raises(TintingConfigError, match="does not support model pools of type BaseModelPool"):
        _run(BaseModelPool({"_pretrained_": "x", "a": "y"}))


def test_saved_weights_that_do_not_match_the_pool_are_refused(tiny_suites, tmp_path):
    _run(load_pool(tiny_suites, "tiny-clip_TA4"), fabric=_logging_fabric(tmp_path / "run"), max_steps=1)
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    del pool._models["cifar10"]
    with pytest.raises(TintingConfigError, match="do not match this model pool: tasks differ"):
        _run(pool, weights=str(tmp_path / "run"))
    with pytest.raises(TintingConfigError, match="tinted layer differs: saved 'head', configured '1'"):
        _run(load_pool(tiny_suites, "tiny-clip_TA4"), weights=str(tmp_path / "run"), tinted_layer=1)
    with pytest.raises(TintingConfigError, match="no such file"):
        _run(load_pool(tiny_suites, "tiny-clip_TA4"), weights=str(tmp_path / "nowhere"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TintingConfigError, match="not a readable safetensors file"):
        _run(load_pool(tiny_suites, "tiny-clip_TA4"), weights=str(tmp_path / "broken.safetensors"))


@pytest.mark.parametrize("suite", ["tiny-clip_TA4", "tiny-openclip_TA4"])
def test_uint8_inputs_are_exact_and_a_quarter_of_float32(tiny_suites, suite):
    from fusion_bench_tinting.core.data import Uint8ImageInputs

    pool = load_pool(tiny_suites, suite)
    family = family_for(pool, cpu_fabric())
    full = family.adaptation_inputs("eurosat", batch_size=64, num_workers=0, dtype=torch.float32)
    small = family.adaptation_inputs("eurosat", batch_size=64, num_workers=0, dtype=torch.uint8)
    assert isinstance(small, Uint8ImageInputs) and small.tensor.dtype == torch.uint8
    assert small.nbytes * 4 == full.nbytes
    index = torch.tensor([5, 0, 17])
    assert torch.allclose(small.gather(index, torch.device("cpu")), full.tensor[index], atol=1e-5)
    assert torch.allclose(torch.cat(list(small.batches(50, torch.device("cpu")))), full.tensor, atol=1e-5)


def test_uint8_caching_falls_back_to_float16_for_inputs_off_the_8_bit_grid():
    from fusion_bench_tinting.core.data import TensorInputs, cache_inputs

    on_grid = torch.randint(0, 256, (6, 3, 4, 4)).float() / 255
    off_grid = torch.rand(6, 3, 4, 4)
    dataset = [(x, 0) for x in torch.cat([on_grid, off_grid])]  # the first batch is on the grid, the second not
    inputs = cache_inputs(
        dataset,
        batch_size=6,
        num_workers=0,
        dtype=torch.uint8,
        desc="mixed",
        normalization=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    )
    assert type(inputs) is TensorInputs and inputs.tensor.dtype == torch.float16
    assert torch.allclose(inputs.tensor.float(), torch.cat([on_grid, off_grid]), atol=1e-3)


def test_num_workers_auto_decodes_large_sets_in_workers_and_small_ones_in_process(monkeypatch):
    import os

    from fusion_bench_tinting.core.data import SMALL_DATASET, cache_inputs, resolve_num_workers

    assert resolve_num_workers(3, 10) == 3 and resolve_num_workers("auto", SMALL_DATASET - 1) == 0
    # Lightning's suggestion: the node's cores, one left to the main process; at most 8
    for cores, expected in [(1, 1), (2, 1), (6, 5), (64, 8)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)), raising=False)
        assert resolve_num_workers("auto", SMALL_DATASET) == expected
    monkeypatch.undo()
    # a large set through real worker processes: same rows, same order as in-process
    images = torch.rand(SMALL_DATASET + 37, 3, 2, 2)
    dataset = [(x, 0) for x in images]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    in_workers = cache_inputs(dataset, batch_size=100, num_workers="auto", dtype=torch.float32, desc="workers")
    in_process = cache_inputs(dataset, batch_size=100, num_workers=0, dtype=torch.float32, desc="in process")
    assert torch.equal(in_workers.tensor, images) and torch.equal(in_process.tensor, images)
    # uint8: the workers put the pixels on their 8-bit grid; the main process only concatenates
    pixels = torch.randint(0, 256, images.shape, dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    normalised = (pixels.float() / 255 - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    in_workers = cache_inputs(
        [(x, 0) for x in normalised],
        batch_size=100,
        num_workers="auto",
        dtype=torch.uint8,
        desc="uint8 workers",
        normalization=(mean, std),
    )
    assert in_workers.tensor.dtype == torch.uint8 and torch.equal(in_workers.tensor, pixels)


@pytest.mark.parametrize(
    "where, message",
    [
        (
            "fusion_bench_tinting.core.adaptation.TintingTrainer.task_loss",
            "Adaptation with batch_size=32 ran out of device memory",
        ),
        ("fusion_bench_tinting.core.teacher_pass.TeacherPass._teacher_outputs", "The teacher pass of 'eurosat'"),
    ],
)
def test_running_out_of_device_memory_is_explained(tiny_suites, monkeypatch, where, message):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(where, out_of_memory)
    with pytest.raises(TintingConfigError, match=message) as raised:
        _run(load_pool(tiny_suites, "tiny-clip_TA4"), reuse_cache=False)
    assert "Tried to allocate 2.00 GiB" in str(raised.value) and "method." in str(
        raised.value
    )  # what and what to change
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no torch trace chained to it


@pytest.mark.parametrize("kind", ["tensor", "uint8_image", "tokens"])
def test_cache_entries_are_safetensors_that_give_back_the_same_inputs_and_teacher(tmp_path, kind):
    from safetensors import safe_open

    from fusion_bench_tinting.caching import TaskCache
    from fusion_bench_tinting.core.data import TensorInputs, Uint8ImageInputs
    from fusion_bench_tinting.families.token_inputs import TokenInputs

    inputs = {
        "tensor": TensorInputs(torch.randn(5, 3, 4, 4)),
        "uint8_image": Uint8ImageInputs(
            torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8),
            torch.tensor([0.5, 0.4, 0.3]),
            torch.tensor([0.2, 0.3, 0.25]),
        ),
        "tokens": TokenInputs.from_rows([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_token_id=0),
    }[kind]
    teacher = torch.randn(len(inputs), 3)
    cache = TaskCache(tmp_path)
    cache.save("entry", inputs, teacher)
    with safe_open(str(tmp_path / "entry.safetensors"), framework="pt") as entry:  # plain tensors, no pickle
        assert entry.metadata()["inputs_kind"] == kind
    loaded = cache.load("entry")
    assert type(loaded["inputs"]) is type(inputs) and torch.equal(loaded["teacher"], teacher)
    index = torch.tensor([1, 0])
    original, again = inputs.gather(index, torch.device("cpu")), loaded["inputs"].gather(index, torch.device("cpu"))
    if kind == "tokens":
        assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)
    else:
        assert torch.equal(original, again)
    (tmp_path / "entry.safetensors").write_bytes(b"broken")
    assert cache.load("entry") is None  # an unreadable entry is rebuilt, not trusted


def test_batched_zero_shot_heads_equal_fusion_bench_s_per_class_ones():
    from fusion_bench.models.hf_clip import HFCLIPClassifier
    from fusion_bench.tasks.clip_classification import get_classnames_and_templates

    from fusion_bench_tinting.core.families.hf_clip import zero_shot_embeddings
    from fusion_bench_tinting.testing.tiny_suites import tiny_hf_clip

    clip, processor = tiny_hf_clip(seed=3, max_positions=256)
    classifier = HFCLIPClassifier(clip, processor)
    for task in ("dtd", "gtsrb"):  # 47 and 43 classes, prompts of different lengths in one padded batch
        classnames, templates = get_classnames_and_templates(task)
        classifier.set_classification_task(classnames, templates)
        batched = zero_shot_embeddings(clip, processor.tokenizer, classnames, templates, batch_size=100)
        assert batched.shape == classifier.zeroshot_weights.shape
        assert torch.allclose(batched, classifier.zeroshot_weights, atol=1e-5)


def test_profile_steps_times_each_part_of_a_step(tiny_suites):
    algorithm = build_tinting(max_steps=1, profile_steps=True)  # a setting of the plugin's method, not an option
    algorithm.fabric = cpu_fabric()
    algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))
    recorded = set(algorithm.profiler.recorded_durations)
    parts = {f"step: {part}" for part in ("data", "merge", "forward", "backward", "optimizer")}
    assert parts <= recorded
    quiet = build_tinting(max_steps=1)
    quiet.fabric = cpu_fabric()
    quiet.run(load_pool(tiny_suites, "tiny-clip_TA4"))
    assert not parts & set(quiet.profiler.recorded_durations)  # off by default: no device syncs per part
