"""``init_from=adamerging``: the coefficients FusionBench's layer-wise AdaMerging saved, as the starting point."""

import pytest
import torch
from conftest import cpu_fabric, load_pool, run_cli, task_accuracies

from fusion_bench_tinting import ModelTintingAlgorithm
from fusion_bench_tinting.core.errors import TintingConfigError


@pytest.mark.slow
def test_starting_from_adamerging_reproduces_its_merged_model(tiny_suites, tmp_path):
    """With no adaptation step, the zero-shot heads and AdaMerging's coefficients (unclamped, as its config
    leaves them), our merged model is AdaMerging's: the same accuracy on every task."""
    config = ["--config-dir", str(tiny_suites / "config"), "modelpool=tiny-clip_TA4", "taskpool=tiny-clip_TA4"]
    adamerging = run_cli(
        [
            *config,
            "method=adamerging/clip",
            "method.name=clip_layer_wise_adamerging",
            "method.max_steps=4",
            "method.lr=0.05",
        ],
        tmp_path / "adamerging",
    )
    saved = torch.load(tmp_path / "adamerging" / "merging_weights.pt", weights_only=True)
    assert not torch.allclose(saved, torch.full_like(saved, 0.3))  # AdaMerging moved them
    ours = run_cli(
        [
            *config,
            "method=model_tinting",
            "method.init_from=adamerging",
            "method.max_steps=0",
            f"method.adamerging_weights={tmp_path / 'adamerging'}",
            "method.clamp_weights=false",
        ],
        tmp_path / "ours",
    )
    assert task_accuracies(ours) == pytest.approx(task_accuracies(adamerging), abs=1e-6)
    assert ours["adaptation"]["init_from"].startswith("adamerging(")


def _run(pool, **options):
    algorithm = ModelTintingAlgorithm(max_steps=0, **options)
    algorithm.fabric = cpu_fabric()
    return algorithm.run(pool)


def test_adamerging_weights_of_another_layout_are_refused_before_adaptation(tiny_suites, tmp_path):
    pool = load_pool(tiny_suites, "tiny-clip_TA4")
    wrong = tmp_path / "merging_weights.pt"
    torch.save(torch.full((3, 10), 0.3), wrong)  # 3 tasks x 10 layers; the pool has 4 tasks
    with pytest.raises(TintingConfigError, match=r"holds 3 tasks x 10 layers, but this run merges 4 tasks \(eurosat"):
        _run(pool, init_from="adamerging", adamerging_weights=str(tmp_path))
    with pytest.raises(TintingConfigError, match="no such file"):
        _run(pool, init_from="adamerging", adamerging_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(TintingConfigError, match="needs method.adamerging_weights"):
        _run(pool, init_from="adamerging")
    wrong.write_bytes(b"not a tensor file")
    with pytest.raises(TintingConfigError, match="not a readable torch tensor file"):
        _run(pool, init_from="adamerging", adamerging_weights=str(wrong))


def test_a_run_saves_its_coefficients_as_a_start_for_a_run_that_keeps_the_pooler_per_task(tiny_text, tmp_path):
    """AdaMerging's objective through our loop on BERT (pooler merged, heads frozen) writes merging_weights.pt
    over every encoder tensor; a run with each task's own pooler starts from it without the pooler's columns."""
    from fusion_bench_tinting.core.results import ADAMERGING_FILE

    config = ["--config-dir", str(tiny_text / "config"), "modelpool=tiny-bert_glue", "method=model_tinting"]
    run_cli(
        [
            *config,
            "method.head_projection=merged",
            "method.loss=entropy",
            "method.train_tinted_layer=false",
            "method.max_steps=3",
            "method.lr=0.05",
        ],
        tmp_path / "entropy",
    )
    pool = load_pool(tiny_text, "tiny-bert_glue")
    encoder_tensors = [n for n, _ in pool.load_model("_pretrained_").named_parameters()]
    saved = torch.load(tmp_path / "entropy" / ADAMERGING_FILE, weights_only=True)
    assert saved.shape == (2, len(encoder_tensors)) and not torch.allclose(saved, torch.full_like(saved, 0.3))

    start = {"init_from": "adamerging", "adamerging_weights": str(tmp_path / "entropy")}
    merged_pooler = _run(pool, head_projection="merged", **start).backbone.state_dict()
    own_pooler = _run(pool, **start).backbone.state_dict()
    task_arithmetic = _run(pool).backbone.state_dict()
    body = [n for n in encoder_tensors if not n.startswith("pooler.")]
    assert all(torch.equal(own_pooler[n], merged_pooler[n]) for n in body)
    assert not all(torch.equal(own_pooler[n], task_arithmetic[n]) for n in body)


def test_columns_of_tensors_this_run_does_not_merge_are_left_out(tmp_path):
    from fusion_bench_tinting.adamerging_start import load_adamerging_weights
    from fusion_bench_tinting.core.results import save_merging_weights

    weights = torch.arange(8.0).reshape(2, 4)  # 2 tasks x encoder tensors a, b, c, d
    save_merging_weights(str(tmp_path / "merging_weights.pt"), weights)
    start = load_adamerging_weights(str(tmp_path), ["x", "y"], ["a", "c", "d"], ["a", "b", "c", "d"])
    assert torch.equal(start, torch.tensor([[0.0, 2.0, 3.0], [4.0, 6.0, 7.0]]))
    with pytest.raises(TintingConfigError, match="holds 2 tasks x 4 layers, but this run merges 2 tasks"):
        load_adamerging_weights(str(tmp_path), ["x", "y"], ["a.qkv", "d"], ["a", "b", "c", "d"])  # not a tensor
