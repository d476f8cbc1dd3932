"""``compile_step``: the compiled merge + encoder gives the eager loop's results, compiles once for all
tasks (heads of different sizes stay outside the graph), and bad options are refused with a clear error.
Also the fused Adam used on CUDA, run here on the CPU against the default implementation."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from conftest import build_tinting, cpu_fabric, load_pool
from torch import nn
from torch.func import functional_call

from fusion_bench_tinting.compiled import CompiledTintingTrainer, compile_options
from fusion_bench_tinting.core.adaptation import AdaptationOptions
from fusion_bench_tinting.core.data import TensorInputs
from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.core.merging import LayerWiseMerger
from fusion_bench_tinting.core.run_state import TaskState

CLASSES = (3, 5, 2)  # a head shape per task: one compiled graph must serve them all
BLOCK = ("2.weight", "2.bias")  # the LayerNorm, when the tinted layer is a block


def _toy_tasks():
    """An MLP encoder, three 'fine-tuned' copies, their heads (different class counts) and teachers."""
    torch.manual_seed(1)
    encoder = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.LayerNorm(10), nn.Linear(10, 8)).requires_grad_(False)
    pretrained = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    finetuned, heads, inputs, teachers = [], [], [], []
    for classes in CLASSES:
        weights = {n: p + 0.3 * torch.randn_like(p) for n, p in pretrained.items()}
        head = nn.Linear(8, classes)
        x = torch.randn(24, 6)
        with torch.no_grad():
            teachers.append(head(functional_call(encoder, weights, (x,))))
        finetuned.append(weights)
        heads.append(head)
        inputs.append(x)
    return encoder, pretrained, finetuned, heads, inputs, teachers


def _adapt(
    toy,
    *,
    compile_step=False,
    backend="aot_eager",
    block=False,
    confidence_filter=False,
    fused_optimizer=None,
    device="cpu",
    train_coefficients=True,
    merges=None,
):
    device = torch.device(device)
    encoder, pretrained, finetuned, heads, inputs, teachers = toy
    encoder = copy.deepcopy(encoder).to(device)
    pretrained = {n: p.to(device) for n, p in pretrained.items()}
    finetuned = [{n: p.to(device) for n, p in weights.items()} for weights in finetuned]
    heads, inputs, teachers = (
        [h.to(device) for h in heads],
        [x.to(device) for x in inputs],
        [t.to(device) for t in teachers],
    )
    merger = LayerWiseMerger(pretrained, len(CLASSES), init_value=0.3)
    for k, weights in enumerate(finetuned):
        merger.set_task_vector(k, weights)
    merger.check_complete()
    states = [
        TaskState(
            name=f"t{k}",
            inputs=TensorInputs(inputs[k]),
            teacher=teachers[k],
            head=copy.deepcopy(heads[k]),
            block={n: nn.Parameter(pretrained[n].clone()) for n in BLOCK} if block else {},
        )
        for k in range(len(CLASSES))
    ]
    trainer = CompiledTintingTrainer(
        merger,
        lambda params, x: functional_call(encoder, dict(params), (x,)),
        states,
        AdaptationOptions(
            max_steps=3,
            lr=0.05,
            batch_size=8,
            confidence_filter=confidence_filter,
            train_coefficients=train_coefficients,
        ),
        device=device,
        generator=torch.Generator().manual_seed(0),
        compile_options=compile_options(compile_step, backend),
        fused_optimizer=fused_optimizer,
    )
    if merges is not None:  # count the merges the trainer asks for (a fused compiled step asks none)
        merge = trainer._merge
        trainer._merge = lambda: merges.append(1) or merge()
    stats = trainer.run()
    tinted = [[p.detach().cpu().clone() for p in s.tinted_parameters()] for s in states]
    return merger.coefficients.detach().cpu().clone(), tinted, stats


def _assert_same(a, b, atol, coefficients_adapt=True):
    (coefficients_a, tinted_a, _), (coefficients_b, tinted_b, _) = a, b
    # the coefficients moved (or, frozen, stayed at their initial value)
    assert torch.allclose(coefficients_a, torch.full_like(coefficients_a, 0.3)) != coefficients_adapt
    torch.testing.assert_close(coefficients_a, coefficients_b, atol=atol, rtol=0)
    for task_a, task_b in zip(tinted_a, tinted_b):
        for p, q in zip(task_a, task_b):
            torch.testing.assert_close(p, q, atol=atol, rtol=0)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"block": True},
        {"confidence_filter": True},
    ],
    ids=["head", "tinted-block", "plusplus"],
)
def test_compiled_step_matches_the_eager_loop(variant):
    toy = _toy_tasks()
    eager = _adapt(toy, **variant)
    compiled = _adapt(toy, compile_step=True, **variant)
    _assert_same(compiled, eager, atol=1e-6)
    assert compiled[2].optimizer_steps == eager[2].optimizer_steps
    assert compiled[2].first_iteration_seconds > 0


@pytest.mark.parametrize("block", [False, True], ids=["head", "tinted-block"])
def test_one_graph_serves_every_task(block):
    _adapt(_toy_tasks(), compile_step=True, block=block)
    # three tasks with 3, 5 and 2 classes (or their own LayerNorm each), nine steps: captured once
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_compiled_step_with_frozen_coefficients_merges_once():
    """Frozen coefficients: merged once, eagerly; only the encoder is compiled; heads still adapt as eager."""
    toy, merges = _toy_tasks(), []
    compiled = _adapt(toy, compile_step=True, train_coefficients=False, merges=merges)
    assert merges == [] and torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    _assert_same(compiled, _adapt(toy, train_coefficients=False), atol=1e-6, coefficients_adapt=False)
    assert not torch.equal(compiled[1][0][0], toy[3][0].weight)  # the first task's head did adapt


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler on the CPU"
)
def test_inductor_code_matches_the_eager_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # compile afresh, write nothing outside
    toy = _toy_tasks()
    _assert_same(_adapt(toy, compile_step=True, backend="inductor"), _adapt(toy), atol=1e-5)


def test_fused_adam_matches_the_default_adam():
    toy = _toy_tasks()
    _assert_same(_adapt(toy, fused_optimizer=True), _adapt(toy, fused_optimizer=False), atol=1e-6)


@pytest.mark.parametrize(
    "compile_step, backend, message",
    [
        ("fast", "inductor", "compile_step='fast'"),
        (True, "no_such_backend", "not a torch.compile backend"),
        ("reduce-overhead", "aot_eager", "mode of the inductor backend"),
    ],
)
def test_bad_compile_options_are_refused(compile_step, backend, message):
    with pytest.raises(TintingConfigError, match=message):
        compile_options(compile_step, backend)


def test_compile_options():
    assert compile_options(False) is None
    assert compile_options(True) == {"backend": "inductor", "fullgraph": False}
    assert compile_options("reduce-overhead")["mode"] == "reduce-overhead"


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["tiny-clip_TA4", "tiny-openclip_TA4", "tiny-roberta_glue"])
def test_compiled_run_on_a_tiny_suite_reproduces_the_eager_run(suite, request):
    """Through the method's API on real pools of each family (HF CLIP, OpenCLIP's MHA, RoBERTa with
    token batches of varying length): the same coefficients and losses as the eager run."""

    root = request.getfixturevalue("tiny_text" if "roberta" in suite else "tiny_suites")
    results = {}
    for compile_step in (False, True):
        algorithm = build_tinting(
            max_steps=3, compile_step=compile_step, compile_backend="aot_eager", save_weights=False, reuse_cache=False
        )
        algorithm.fabric = cpu_fabric()
        model = algorithm.run(load_pool(root, suite))
        results[compile_step] = model.report_extras
    eager, compiled = results[False], results[True]
    assert compiled["compile_step"] is True and eager["compile_step"] is False
    assert compiled["first_iteration_s"] > 0
    for task, value in eager["mean_coefficient_per_task"].items():
        assert compiled["mean_coefficient_per_task"][task] == pytest.approx(value, abs=1e-5)
        assert compiled["final_loss_per_task"][task] == pytest.approx(eager["final_loss_per_task"][task], abs=1e-4)


# ----- on a GPU (skipped elsewhere; run them when a GPU is lent: python -m pytest tests -k cuda) -----
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize(
    "variant",
    [{}, {"block": True}, {"confidence_filter": True}],
    ids=["head", "tinted-block", "plusplus"],
)
def test_cuda_graphs_step_matches_the_eager_loop_on_cuda(variant, tmp_path, monkeypatch):
    """reduce-overhead = inductor + CUDA graphs; a ++ step skipped before its backward, per-task blocks as
    graph inputs and the fused Adam all meet here."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    toy = _toy_tasks()
    eager = _adapt(toy, device="cuda", fused_optimizer=False, **variant)
    compiled = _adapt(toy, device="cuda", compile_step="reduce-overhead", backend="inductor", **variant)
    _assert_same(compiled, eager, atol=1e-5)
