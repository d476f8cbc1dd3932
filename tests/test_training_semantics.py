"""Training semantics around the loop: fp16 loss scaling, Fabric's scaler, and what a run logs."""

import pytest
import torch
from test_adaptation import _toy

from fusion_bench_tinting.resumable import ResumableTrainer


def _fp16_trainer(scaler, fused=False, **options):
    """Tasks whose head weights are tiny (1e-7): in fp16 the gradients reaching the coefficients underflow.
    The core's loop, or with the fused Adam the plugin's (which cancels steps on the device)."""
    from fusion_bench_tinting.core.adaptation import AdaptationOptions, TintingTrainer
    from fusion_bench_tinting.methods import PluginTrainer

    merger, encode, states = _toy()
    with torch.no_grad():
        for state in states:
            state.head.weight.mul_(1e-7)
    defaults = dict(max_steps=2, lr=0.05, batch_size=8, train_tinted_layer=False)
    defaults.update(options)
    return (PluginTrainer if fused else TintingTrainer)(
        merger,
        encode,
        states,
        AdaptationOptions(**defaults),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        autocast=lambda: torch.autocast("cpu", dtype=torch.float16),
        grad_scaler=scaler,
        fused_optimizer=fused,
    )


@pytest.mark.parametrize("fused", [False, True], ids=["host-check", "fused"])
def test_fp16_loss_scaling_trains_where_plain_fp16_underflows(fused):
    plain = _fp16_trainer(None, fused=fused)
    before = plain.merger.coefficients.detach().clone()
    plain._sequential_step(0)
    assert torch.count_nonzero(plain.merger.coefficients.grad) == 0  # every gradient underflowed
    assert torch.equal(plain.merger.coefficients.detach(), before)

    scaled = _fp16_trainer(torch.amp.GradScaler("cpu"), fused=fused)
    scaled._sequential_step(0)
    assert torch.count_nonzero(scaled.merger.coefficients.grad) > 0  # unscaled, small but not zero
    assert not torch.equal(scaled.merger.coefficients.detach(), before)


@pytest.mark.parametrize("fused", [False, True], ids=["host-check", "fused"])
def test_fp16_overflowing_step_is_skipped_and_the_scale_backs_off(fused):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # scaled gradients overflow fp16
    trainer = _fp16_trainer(scaler, fused=fused, confidence_filter=True)
    before = trainer.merger.coefficients.detach().clone()
    trainer._sequential_step(0)
    trainer._settle_empty_steps()
    assert (trainer.steps, trainer.skipped) == (0, 1)
    assert torch.equal(trainer.merger.coefficients.detach(), before)
    assert scaler.get_scale() == 2.0**59
    state = ResumableTrainer.state_dict(trainer)  # the plugin's checkpoint of this loop
    assert state["scaler"]["scale"] == 2.0**59  # resumed runs continue with the same scale


def test_the_method_takes_fabrics_scaler_under_16_mixed_only():
    from types import SimpleNamespace

    from lightning.fabric.plugins.precision import MixedPrecision

    from fusion_bench_tinting.core.fabric_glue import grad_scaler

    fp16 = MixedPrecision("16-mixed", device="cuda", scaler=torch.amp.GradScaler("cpu"))
    assert grad_scaler(SimpleNamespace(strategy=SimpleNamespace(precision=fp16))) is fp16.scaler
    bf16 = MixedPrecision("bf16-mixed", device="cpu")
    assert grad_scaler(SimpleNamespace(strategy=SimpleNamespace(precision=bf16))) is None


def test_coefficient_trajectories_and_gradient_norms_are_logged_per_task():
    logged = []
    merger, encode, states = _toy()
    from fusion_bench_tinting.core.adaptation import AdaptationOptions
    from fusion_bench_tinting.methods import PluginTrainer

    trainer = PluginTrainer(  # the plugin's loop logs the coefficients' figures beside the core's losses
        merger,
        encode,
        states,
        AdaptationOptions(max_steps=4, lr=0.05, batch_size=8, log_every=2),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        log_metrics=lambda metrics, step: logged.append((step, metrics)),
    )
    trainer.run()
    assert [step for step, _ in logged] == [2, 4]
    last = logged[-1][1]
    clamped = merger.effective_coefficients().detach()
    for k, state in enumerate(states):
        assert last[f"coefficients/mean/{state.name}"] == pytest.approx(clamped[k].mean().item(), abs=1e-6)
        assert last[f"coefficients/grad_norm/{state.name}"] > 0
    assert last["coefficients/min"] <= last["coefficients/mean"] <= last["coefficients/max"]


def test_coefficient_trajectories_are_read_back_from_tensorboard_and_plotted(tmp_path):
    from lightning.fabric.loggers import TensorBoardLogger

    from fusion_bench_tinting.comparison.trajectories import plot_trajectories, read_scalars, summarise

    logger = TensorBoardLogger(root_dir=str(tmp_path), name="", version="")
    for step, (mean, norm) in enumerate([(0.3, 1e-3), (0.32, 5e-4), (0.35, 2e-4)], start=1):
        logger.log_metrics(
            {"coefficients/mean/a": mean, "coefficients/grad_norm/a": norm, "train/loss": 1.0}, step=step
        )
    logger.finalize("success")
    series = read_scalars(tmp_path)
    assert set(series) == {"coefficients/mean/a", "coefficients/grad_norm/a"}  # train/loss is not a coefficient
    summary = summarise(series, ["a"])["a"]
    assert summary["first_mean"] == pytest.approx(0.3) and summary["last_mean"] == pytest.approx(0.35)
    assert summary["mean_grad_norm"] == pytest.approx((1e-3 + 5e-4 + 2e-4) / 3)
    plot_trajectories({"run": series}, tmp_path / "coefficients.png")
    assert (tmp_path / "coefficients.png").stat().st_size > 0


def test_a_run_logs_options_per_task_losses_drop_fractions_and_a_coefficient_heat_map(tiny_suites, tmp_path):
    from conftest import run_cli
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run_cli(
        [
            "--config-dir",
            str(tiny_suites / "config"),
            "method=model_tinting_plusplus",
            "modelpool=tiny-clip_TA4",
            "method.max_steps=4",
            "method.lr=0.01",
        ],
        tmp_path / "log",
    )
    events = sorted((tmp_path / "log").rglob("events.out.tfevents.*"))
    tags, hparams = {"scalars": set(), "images": set()}, {}
    for path in events:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] |= set(accumulator.Tags().get(kind, []))
        try:
            contents = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # an events file without hyperparameters
            contents = []
        for content in contents:
            hparams.update(HParamsPluginData.FromString(content).session_start_info.hparams)
    for task in ("eurosat", "stl10", "fashion_mnist", "cifar10"):
        assert {f"train/loss/{task}", f"filter/dropped_fraction/{task}", f"coefficients/mean/{task}"} <= tags["scalars"]
    assert "coefficients/heatmap" in tags["images"]
    assert hparams["lr"].number_value == pytest.approx(0.01) and hparams["max_steps"].number_value == 4
    assert hparams["confidence_filter"].number_value == 1  # Model Tinting++ (booleans arrive as numbers)
