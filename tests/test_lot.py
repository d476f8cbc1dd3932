"""LOT Merging: the closed form against least squares, the layer layouts against the modules' own
forward, singular systems, the method on the tiny suites (CLI), and tinting started from LOT."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import cpu_fabric, load_pool, run_cli, run_cli_subprocess, task_accuracies
from torch import nn

from fusion_bench_tinting import LOTMergingAlgorithm, ModelTintingAlgorithm
from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.lot_merging.layers import _attention_context, find_solvable_layers
from fusion_bench_tinting.lot_merging.solver import LOTSolver


def _toy(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 4, bias=False))


def _perturbed(base: nn.Module, seed: int) -> nn.Module:
    expert = _toy(0)
    expert.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return expert


def _least_squares(rows, packed_vectors):
    """argmin_T sum_k ||A_k (T - T_k)^T||^2 by stacking the systems: lstsq(A, A_k T_k^T)."""
    a = torch.cat([r.double() for r in rows])
    b = torch.cat([r.double() @ t.double().t() for r, t in zip(rows, packed_vectors)])
    return torch.linalg.lstsq(a, b).solution.t()


@pytest.mark.parametrize("ridge", [0.0, 1e-9])
def test_closed_form_equals_a_least_squares_solve_on_a_toy_model(ridge):
    pretrained = _toy(0)
    experts = [_perturbed(pretrained, seed) for seed in (1, 2, 3)]
    inputs = [torch.randn(40, 6, generator=torch.Generator().manual_seed(10 + k)) for k in range(3)]
    pre = {n: p.detach().clone() for n, p in pretrained.named_parameters()}
    solver = LOTSolver(pretrained, list(pre), ridge=ridge)
    assert [layer.kind for layer in solver.layers] == ["linear", "layer_norm", "linear"]
    for expert, x in zip(experts, inputs):
        solver.add_task(pre, expert, [x[:25], x[25:]], forward=expert)  # two batches: sums, not one pass
    merged = solver.task_vector()

    vectors = [{n: p.detach() - pre[n] for n, p in e.named_parameters()} for e in experts]
    ones = torch.ones(40, 1)
    # first linear (with bias): rows [x, 1]
    expected = _least_squares(
        [torch.cat([x, ones], 1) for x in inputs],
        [torch.cat([v["0.weight"], v["0.bias"][:, None]], 1) for v in vectors],
    )
    assert torch.allclose(merged["0.weight"].double(), expected[:, :6], atol=1e-5)
    assert torch.allclose(merged["0.bias"].double(), expected[:, 6], atol=1e-5)
    # LayerNorm: per feature j, rows [x_hat_j, 1] with x_hat the expert's own normalised input
    hidden = [e[0](x).detach() for e, x in zip(experts, inputs)]
    normalised = [F.layer_norm(h, (5,)) for h in hidden]
    for j in range(5):
        expected_j = _least_squares(
            [torch.stack([z[:, j], torch.ones(40)], 1) for z in normalised],
            [torch.stack([v["1.weight"][j], v["1.bias"][j]])[None, :] for v in vectors],
        )
        assert torch.allclose(merged["1.weight"][j].double(), expected_j[0, 0], atol=1e-5)
        assert torch.allclose(merged["1.bias"][j].double(), expected_j[0, 1], atol=1e-5)
    # last linear (no bias): rows are the expert's LayerNorm outputs
    features = [e[1](h).detach() for e, h in zip(experts, hidden)]
    expected = _least_squares(features, [v["2.weight"] for v in vectors])
    assert torch.allclose(merged["2.weight"].double(), expected, atol=1e-5)


def test_closed_form_reduces_to_the_mean_when_every_task_has_the_same_inputs():
    pretrained = _toy(0)
    experts = [_perturbed(pretrained, seed) for seed in (1, 2)]
    pre = {n: p.detach().clone() for n, p in pretrained.named_parameters()}
    solver = LOTSolver(pretrained, ["0.weight", "0.bias"], ridge=0.0)  # only the first layer is merged
    x = torch.randn(30, 6)
    for expert in experts:
        solver.add_task(pre, expert, [x], forward=expert)
    merged = solver.task_vector()
    mean = sum(dict(e.named_parameters())["0.weight"].detach() - pre["0.weight"] for e in experts) / 2
    assert torch.allclose(merged["0.weight"], mean, atol=1e-5)
    assert set(merged) == {"0.weight", "0.bias"}


def _check_rows_reproduce_the_output(module, x, output, **mask):
    """For every solvable layer of ``module``: rows . packed parameters == what the module computes."""
    layers = find_solvable_layers(module, [n for n, _ in module.named_parameters()])
    assert layers
    params = dict(module.named_parameters())
    for layer in layers:
        rows = layer.rows(module, (x,), {}, mask.get("mask"))
        packed = layer.pack(params)
        if rows.dim() == 2:
            computed = rows @ packed[0].t()
        else:  # per-feature problems (LayerNorm): (n, P, m) . (P, 1, m)
            computed = (rows * packed[:, 0, :]).sum(-1)
        assert torch.allclose(computed, output.reshape(computed.shape), atol=1e-5), layer.kind
        round_trip = layer.unpack(packed)
        for name in layer.parameter_names:
            assert torch.equal(round_trip[name], params[name].detach()), name


def test_layer_layouts_reproduce_each_modules_own_forward():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    tokens = torch.randn(2, 7, 6)
    conv1d = Conv1D(4, 6)  # GPT-2's transposed linear
    nn.init.normal_(conv1d.bias)
    _check_rows_reproduce_the_output(conv1d, tokens, conv1d(tokens).detach())
    norm = nn.LayerNorm(6)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    _check_rows_reproduce_the_output(norm, tokens, norm(tokens).detach())
    images = torch.randn(2, 3, 8, 8)
    patches = nn.Conv2d(3, 5, kernel_size=4, stride=4, bias=True)
    _check_rows_reproduce_the_output(patches, images, patches(images).detach().flatten(2).transpose(1, 2))
    # padding tokens are left out of a text batch's rows
    linear = nn.Linear(6, 3)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    rows = find_solvable_layers(linear, ["weight", "bias"])[0].rows(linear, (tokens,), {}, mask)
    assert rows.shape == (10, 7)
    # an overlapping convolution is not a linear map per patch: left to the fallback
    assert find_solvable_layers(nn.Conv2d(3, 5, kernel_size=3, stride=1), ["weight", "bias"]) == []


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_output_projection_sees_what_multihead_attention_computes(batch_first):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    x = torch.randn(3, 5, 8) if batch_first else torch.randn(5, 3, 8)
    causal = torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)
    for mask in (None, causal):
        expected = attention(x, x, x, need_weights=False, attn_mask=mask)[0]
        context = _attention_context(attention, x, mask)
        computed = attention.out_proj(context)
        assert torch.allclose(computed, expected if batch_first else expected.transpose(0, 1), atol=1e-5)
    kinds = [
        layer.weight_name for layer in find_solvable_layers(attention, [n for n, _ in attention.named_parameters()])
    ]
    assert kinds == ["in_proj_weight", "out_proj.weight"]


@pytest.mark.parametrize("ridge", [0.0, 1e-4])
def test_singular_statistics_are_solved_not_crashed(ridge):
    pretrained = nn.Sequential(nn.Linear(8, 3))
    experts = [_perturbed_linear(pretrained, seed) for seed in (1, 2)]
    pre = {n: p.detach().clone() for n, p in pretrained.named_parameters()}
    solver = LOTSolver(pretrained, list(pre), ridge=ridge)
    x = torch.randn(3, 8)  # fewer rows than inputs, and a duplicated column: rank-deficient Gram matrices
    x[:, 1] = x[:, 0]
    for expert in experts:
        solver.add_task(pre, expert, [x], forward=expert)
    merged = solver.task_vector()
    assert all(torch.isfinite(v).all() for v in merged.values())
    # the merged layer still reproduces the experts' mean output on the seen inputs
    outputs = torch.stack([e(x) for e in experts]).mean(0)
    merged_output = F.linear(x, pre["0.weight"] + merged["0.weight"], pre["0.bias"] + merged["0.bias"])
    assert torch.allclose(merged_output, outputs, atol=1e-3)


def _perturbed_linear(base, seed):
    expert = nn.Sequential(nn.Linear(8, 3))
    expert.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return expert


# ----- the method on the tiny suites ----------------------------------------------------------
@pytest.mark.slow
def test_lot_beats_task_arithmetic_on_the_tiny_clip_suite(tiny_suites, tmp_path):
    config = ["--config-dir", str(tiny_suites / "config"), "modelpool=tiny-clip_TA4", "taskpool=tiny-clip_TA4"]
    task_arithmetic = run_cli([*config, "method=task_arithmetic"], tmp_path / "ta")
    lot = run_cli([*config, "method=lot_merging"], tmp_path / "lot")
    assert lot["average"]["accuracy"] >= task_arithmetic["average"]["accuracy"] + 0.05, (
        lot["average"],
        task_arithmetic["average"],
    )
    assert lot["adaptation"]["method"] == "lot_merging"
    assert lot["adaptation"]["tensors_closed_form"] > lot["adaptation"]["tensors_fallback"] > 0


def test_lot_cli_subprocess_on_open_clip(tiny_suites, tmp_path):
    """OpenCLIP's attention applies its output projection functionally; LOT still solves it."""
    log_dir = tmp_path / "log"
    run_cli_subprocess(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=lot_merging",
            "modelpool=tiny-openclip_TA4",
            "method.num_samples=16",
        ],
        log_dir,
    )
    report = json.loads((log_dir / "program_report.json").read_text())
    assert len(task_accuracies(report)) == 4
    extras = report["adaptation"]
    # only class/positional embeddings and the final projection have no closed form
    assert extras["tensors_fallback"] == 3 and extras["num_samples"] == 16


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_samples": 0}, r"method.num_samples=0: an integer >= 1"),
        ({"num_samples": "many"}, r"method.num_samples='many': an integer >= 1"),
        ({"ridge": -1.0}, r"method.ridge=-1.0: a number >= 0"),
        ({"fallback_scale": "half"}, r"method.fallback_scale='half': 'auto' .* or a number"),
        ({"statistics_dtype": "int8"}, r"method.statistics_dtype='int8': one of \['float32', 'float64'\]"),
        ({"batch_size": 0}, r"method.batch_size=0: an integer >= 1"),
    ],
)
def test_bad_lot_options_are_refused_when_the_method_is_built(options, message):
    with pytest.raises(TintingConfigError, match=message):
        LOTMergingAlgorithm(**options)


def test_lot_on_text_keeps_each_tasks_head_and_beats_task_arithmetic(tiny_text, tmp_path):
    config = ["--config-dir", str(tiny_text / "config"), "modelpool=tiny-roberta_glue", "taskpool=tiny-roberta_glue"]
    task_arithmetic = run_cli([*config, "method=task_arithmetic"], tmp_path / "ta")
    lot = run_cli([*config, "method=lot_merging"], tmp_path / "lot")
    assert lot["average"]["score"] > task_arithmetic["average"]["score"]
    assert lot["stsb"]["metric"] == "pearson_spearman"  # the regression task keeps its one-output head


# ----- tinting from LOT -----------------------------------------------------------------------
def test_tinting_from_lot_starts_at_the_lot_merge_and_its_weights_remember_it(tiny_suites, tmp_path):
    config = ["--config-dir", str(tiny_suites / "config"), "modelpool=tiny-clip_TA4", "taskpool=tiny-clip_TA4"]
    lot = run_cli([*config, "method=lot_merging"], tmp_path / "lot")
    start = run_cli([*config, "method=model_tinting", "method.init_from=lot", "method.max_steps=0"], tmp_path / "start")
    assert task_accuracies(start) == task_accuracies(lot)
    assert start["adaptation"]["init_from"].startswith("lot(num_samples=64")
    assert start["adaptation"]["init_values"] == 0.0

    algorithm = ModelTintingAlgorithm(weights=str(tmp_path / "start"))
    algorithm.fabric = cpu_fabric()
    with pytest.raises(TintingConfigError, match="start from another merge: saved 'lot.*configured 'task_arithmetic'"):
        algorithm.run(load_pool(tiny_suites, "tiny-clip_TA4"))


def test_bad_init_from_is_refused():
    with pytest.raises(TintingConfigError, match="init_from='ties'"):
        ModelTintingAlgorithm(init_from="ties")  # when the method is constructed
