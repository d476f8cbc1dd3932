import pytest
import torch
from torch import nn

from fusion_bench_tinting.core.merging import ArchitectureMismatchError, LayerWiseMerger, check_same_parameters


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.q_proj.weight": torch.randn(4, 4, generator=g),
        "layer.k_proj.weight": torch.randn(4, 4, generator=g),
        "layer.v_proj.weight": torch.randn(4, 4, generator=g),
        "layer.fc.bias": torch.randn(3, generator=g),
        "scalar": torch.randn((), generator=g),
    }


def _merger(coefficients, clamp=True):
    pre = _params(0)
    fts = [_params(1), _params(2)]
    merger = LayerWiseMerger(pre, 2, init_value=0.3, clamp=clamp)
    for k, ft in enumerate(fts):
        merger.set_task_vector(k, ft)
    with torch.no_grad():
        merger.coefficients.copy_(coefficients)
    return merger, pre, fts


def test_merge_equals_plain_per_tensor_computation():
    coefficients = torch.tensor([[0.1, 0.5, 0.9, 0.2, 0.7], [0.3, 0.0, 1.0, 0.4, 0.6]])
    merger, pre, fts = _merger(coefficients)
    merged = merger()
    for p, name in enumerate(pre):
        expected = pre[name] + sum(coefficients[k, p] * (fts[k][name] - pre[name]) for k in range(2))
        assert torch.allclose(merged[name], expected, atol=1e-6), name


def test_clamp_limits_coefficients_to_unit_interval_and_can_be_turned_off():
    coefficients = torch.tensor([[1.7, -0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    clamped, pre, fts = _merger(coefficients, clamp=True)
    tau = fts[0]["layer.q_proj.weight"] - pre["layer.q_proj.weight"]
    assert torch.allclose(clamped()["layer.q_proj.weight"], pre["layer.q_proj.weight"] + tau, atol=1e-6)
    assert torch.allclose(clamped()["layer.k_proj.weight"], pre["layer.k_proj.weight"], atol=1e-6)
    raw, _, _ = _merger(coefficients, clamp=False)
    assert torch.allclose(raw()["layer.q_proj.weight"], pre["layer.q_proj.weight"] + 1.7 * tau, atol=1e-5)
    # a clamped coefficient outside [0, 1] gets no gradient, as with torch.clamp
    clamped()["layer.q_proj.weight"].sum().backward()
    assert clamped.coefficients.grad[0, 0] == 0


def test_gradient_reaches_each_coefficient():
    merger, _, _ = _merger(torch.full((2, 5), 0.5))
    sum(t.sum() for t in merger().values()).backward()
    assert merger.coefficients.grad.shape == (2, 5)
    assert (merger.coefficients.grad != 0).all()


def test_load_into_writes_merged_weights():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            for name, value in _params(0).items():
                self.register_parameter(name.replace(".", "_"), nn.Parameter(value.clone()))

    merger, pre, fts = _merger(torch.full((2, 5), 0.25))
    module = M()
    renamed = LayerWiseMerger({n.replace(".", "_"): v for n, v in pre.items()}, 2, init_value=0.25)
    for k, ft in enumerate(fts):
        renamed.set_task_vector(k, {n.replace(".", "_"): v for n, v in ft.items()})
    renamed.load_into(module)
    assert torch.allclose(module.layer_fc_bias, merger()["layer.fc.bias"], atol=1e-6)


def test_architecture_mismatch_names_the_difference():
    pre = _params(0)
    other = dict(_params(1))
    other["layer.fc.bias"] = torch.zeros(5)
    del other["scalar"]
    other["extra"] = torch.zeros(1)
    with pytest.raises(
        ArchitectureMismatchError,
        match="'svhn'.*missing 1 parameter.*scalar.*unexpected.*extra.*layer.fc.bias: \\(5,\\) vs \\(3,\\)",
    ):
        check_same_parameters(pre, other, "svhn")


def test_missing_task_vector_is_detected():
    merger = LayerWiseMerger(_params(0), 2, init_value=0.3)
    merger.set_task_vector(0, _params(1))
    with pytest.raises(RuntimeError, match=r"\[1\]"):
        merger.check_complete()


def test_tensors_no_task_changed_leave_the_per_step_merge_and_results_stay_exact():
    pre = _params(0)
    fts = [dict(_params(1)), dict(_params(2))]
    for ft in fts:
        ft["layer.fc.bias"] = pre["layer.fc.bias"].clone()  # e.g. frozen during fine-tuning
    full = LayerWiseMerger(pre, 2, init_value=0.4)
    compact = LayerWiseMerger(pre, 2, init_value=0.4)
    for k, ft in enumerate(fts):
        full.set_task_vector(k, ft)
        compact.set_task_vector(k, ft)
    compact.check_complete()
    assert compact.task_vectors.shape[1] == full.task_vectors.shape[1] - 3
    assert compact.coefficients.shape == full.coefficients.shape
    merged_full, merged_compact = full(), compact()
    assert set(merged_full) == set(merged_compact)
    for name in merged_full:
        assert torch.allclose(merged_full[name], merged_compact[name], atol=1e-6), name
    sum(t.sum() for t in merged_full.values()).backward()
    sum(t.sum() for t in merged_compact.values()).backward()
    assert torch.allclose(full.coefficients.grad, compact.coefficients.grad, atol=1e-5)


def test_rebase_moves_the_origin_and_keeps_the_fine_tuned_models_at_coefficient_one():
    merger, pre, fts = _merger(torch.zeros(2, 5), clamp=False)
    offset = {name: torch.full_like(value, 0.25) for name, value in pre.items()}
    merger.rebase(offset)
    merger.check_complete()
    for name in pre:
        assert torch.allclose(merger()[name], pre[name] + 0.25, atol=1e-6), name
    with torch.no_grad():
        merger.coefficients.copy_(torch.tensor([[1.0] * 5, [0.0] * 5]))
    for name in pre:
        assert torch.allclose(merger()[name], fts[0][name], atol=1e-6), name
    with pytest.raises(RuntimeError, match="before check_complete"):
        dropped, _, _ = _merger(torch.zeros(2, 5))
        dropped.task_vectors[:, :16] = 0  # a tensor no task changed is dropped by check_complete
        dropped.check_complete()
        dropped.rebase(offset)


def test_half_precision_task_vectors_merge_in_float32_close_to_full_precision():
    coefficients = torch.tensor([[0.1, 0.5, 0.9, 0.2, 0.7], [0.3, 0.0, 1.0, 0.4, 0.6]])
    full, pre, fts = _merger(coefficients)
    half = LayerWiseMerger(pre, 2, init_value=0.3, task_vector_dtype=torch.bfloat16)
    for k, ft in enumerate(fts):
        half.set_task_vector(k, ft)
    with torch.no_grad():
        half.coefficients.copy_(coefficients)
    assert half.task_vectors.dtype == torch.bfloat16 and half.base.dtype == torch.float32
    merged, reference = half(), full()
    for name in pre:
        assert merged[name].dtype == torch.float32
        assert torch.allclose(merged[name], reference[name], atol=2e-2), name
    sum(t.sum() for t in merged.values()).backward()
    assert half.coefficients.grad is not None and torch.isfinite(half.coefficients.grad).all()


def test_memory_check_refuses_a_merge_that_cannot_fit(monkeypatch):
    from fusion_bench_tinting.core import errors as memory
    from fusion_bench_tinting.core.errors import TintingConfigError

    # ViT-L/14's vision tower, 20 tasks: 20 fp32 task vectors + 4 fp32 copies; half with bfloat16 vectors
    required = memory.merge_bytes(303_000_000, 20, torch.float32)
    assert required == 303_000_000 * (20 * 4 + 16)
    assert memory.merge_bytes(303_000_000, 20, torch.bfloat16) == 303_000_000 * (20 * 2 + 16)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10 * memory.GIB)
    with pytest.raises(
        TintingConfigError, match=r"needs at least 27.1 GiB on cuda:0, which has 10.0 GiB free. Use bfloat16"
    ):
        memory.check_fits(torch.device("cuda", 0), required, "Merging 20 task vectors", "Use bfloat16.")
    memory.check_fits(torch.device("cuda", 0), 5 * memory.GIB, "Merging", "")  # fits: no error
    memory.check_fits(torch.device("cpu"), required, "Merging", "")  # host memory is not checked
