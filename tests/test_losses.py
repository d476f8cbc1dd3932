import math

import pytest
import torch
import torch.nn.functional as F

from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.core.losses import LOSSES, confidence_filter, per_sample_loss


def test_confidence_filter_on_hand_made_logits():
    teacher = torch.tensor(
        [
            [2.0, 0.0, 0.0],  # teacher class 0, p ~ 0.79
            [2.0, 0.0, 0.0],
            [2.0, 0.0, 0.0],
            [0.0, 0.0, 5.0],  # teacher class 2, p ~ 0.99
        ]
    )
    student = torch.tensor(
        [
            [0.0, 9.0, 0.0],  # disagrees and more confident -> dropped
            [0.0, 0.5, 0.0],  # disagrees but less confident -> kept
            [9.0, 0.0, 0.0],  # agrees (even if more confident) -> kept
            [0.0, 3.0, 0.0],  # disagrees, p ~ 0.91 < 0.99 -> kept
        ]
    )
    assert confidence_filter(student, teacher).tolist() == [False, True, True, True]


def test_default_loss_is_cross_entropy_against_teacher_argmax():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]])
    teacher = torch.tensor([[0.0, 0.0, 4.0], [5.0, 1.0, 0.0]])
    expected = torch.stack([-F.log_softmax(student[0], -1)[2], -F.log_softmax(student[1], -1)[0]])
    assert torch.allclose(per_sample_loss("ce", student, teacher), expected)


def test_kl_js_soft_ce_entropy_match_their_definitions():
    student = torch.tensor([[1.0, 2.0, 0.5]])
    teacher = torch.tensor([[0.3, -1.0, 2.0]])
    p_s, p_t = student.softmax(-1)[0], teacher.softmax(-1)[0]
    kl = float((p_t * (p_t / p_s).log()).sum())
    m = (p_s + p_t) / 2
    js = float(0.5 * (p_s * (p_s / m).log()).sum() + 0.5 * (p_t * (p_t / m).log()).sum())
    assert per_sample_loss("kl", student, teacher).item() == pytest.approx(kl, rel=1e-5)
    assert per_sample_loss("js", student, teacher).item() == pytest.approx(js, rel=1e-5)
    assert per_sample_loss("soft_ce", student, teacher).item() == pytest.approx(
        float(-(p_t * p_s.log()).sum()), rel=1e-5
    )
    assert per_sample_loss("entropy", student, teacher).item() == pytest.approx(
        float(-(p_s * p_s.log()).sum()), rel=1e-5
    )
    assert per_sample_loss("js", student, student).item() == pytest.approx(0.0, abs=1e-6)


def test_distance_losses():
    student = torch.tensor([[1.0, 2.0]])
    teacher = torch.tensor([[2.0, 0.0]])
    assert per_sample_loss("l1", student, teacher).item() == pytest.approx(1.5)
    assert per_sample_loss("l2", student, teacher).item() == pytest.approx(2.5)
    assert per_sample_loss("cosine", student, teacher).item() == pytest.approx(1 - 2 / (math.sqrt(5) * 2))


def test_regression_head_uses_squared_error():
    student = torch.tensor([[1.0], [3.0]])
    teacher = torch.tensor([[0.0], [1.0]])
    assert per_sample_loss("ce", student, teacher).tolist() == [1.0, 4.0]


def test_unknown_loss_is_refused_with_the_choices():
    from fusion_bench_tinting import ModelTintingAlgorithm

    with pytest.raises(TintingConfigError, match=r"method.loss='hinge': one of \['ce'"):
        ModelTintingAlgorithm(loss="hinge")
    assert set(LOSSES) >= {"ce", "soft_ce", "kl", "js", "entropy", "l1", "l2", "cosine"}


def test_a_dense_prediction_gets_one_loss_and_one_filter_decision_per_pixel():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)  # (batch, classes, height, width)
    losses = per_sample_loss("ce", student, teacher)
    assert losses.shape == (2, 3, 5)
    pixel = (1, 2, 4)
    expected = F.cross_entropy(
        student[pixel[0], :, pixel[1], pixel[2]][None], teacher[pixel[0], :, pixel[1], pixel[2]].argmax()[None]
    )
    assert losses[pixel].item() == pytest.approx(expected.item(), rel=1e-6)
    flat = lambda t: t.movedim(1, -1).reshape(-1, 4)  # noqa: E731
    assert (
        confidence_filter(student, teacher).reshape(-1).tolist()
        == confidence_filter(flat(student), flat(teacher)).tolist()
    )
    depth = per_sample_loss("l1", torch.zeros(2, 1, 3, 5), torch.full((2, 1, 3, 5), 2.0))  # one channel: a regression
    assert depth.shape == (2, 3, 5) and torch.all(depth == 2.0)
