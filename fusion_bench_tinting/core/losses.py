"""Per-sample objectives between the merged model (student) and a fine-tuned model (teacher), one loss per
sample so that Model Tinting++'s filter can drop samples before the mean. ``ce`` (default): the reference's
cross-entropy against the teacher's argmax. Regression heads use the squared error; dense predictions
(batch, channels, *positions) one loss per position, the channels as classes."""

from __future__ import annotations

import logging
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import TintingConfigError

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]


def _hard_label_ce(student: Tensor, teacher: Tensor) -> Tensor:
    return F.cross_entropy(student, teacher.argmax(dim=-1), reduction="none")


def _soft_label_ce(student: Tensor, teacher: Tensor) -> Tensor:
    return -(teacher.softmax(dim=-1) * student.log_softmax(dim=-1)).sum(dim=-1)


def _kl(student: Tensor, teacher: Tensor) -> Tensor:
    # KL(p_teacher || p_student)
    log_p_t = teacher.log_softmax(dim=-1)
    return (log_p_t.exp() * (log_p_t - student.log_softmax(dim=-1))).sum(dim=-1)


def _js(student: Tensor, teacher: Tensor) -> Tensor:
    log_p_s = student.log_softmax(dim=-1)
    log_p_t = teacher.log_softmax(dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p_s, log_p_t]), dim=0) - torch.log(
        torch.tensor(2.0, dtype=log_p_s.dtype, device=log_p_s.device)
    )
    kl_s = (log_p_s.exp() * (log_p_s - log_m)).sum(dim=-1)
    kl_t = (log_p_t.exp() * (log_p_t - log_m)).sum(dim=-1)
    return 0.5 * (kl_s + kl_t)


def _entropy(student: Tensor, teacher: Tensor) -> Tensor:
    # AdaMerging's objective: the teacher is ignored.
    log_p = student.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def _l1(student: Tensor, teacher: Tensor) -> Tensor:
    return (student - teacher).abs().mean(dim=-1)


def _smooth_l1(student: Tensor, teacher: Tensor) -> Tensor:
    return F.smooth_l1_loss(student, teacher, reduction="none").mean(dim=-1)


def _l2(student: Tensor, teacher: Tensor) -> Tensor:
    return (student - teacher).pow(2).mean(dim=-1)


def _cosine(student: Tensor, teacher: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(student, teacher, dim=-1)


#: every objective by name: classification losses and the value-by-value ones that also fit regression heads
LOSSES: Dict[str, PerSampleLoss] = {
    "ce": _hard_label_ce,
    "soft_ce": _soft_label_ce,
    "kl": _kl,
    "js": _js,
    "entropy": _entropy,
    "l1": _l1,
    "smooth_l1": _smooth_l1,
    "l2": _l2,
    "cosine": _cosine,
}
# Losses that compare outputs value by value also make sense for a regression head; `ce` (the
# default "teacher label" loss) means the squared error there, as in the paper for STS-B.
REGRESSION_LOSSES: Dict[str, PerSampleLoss] = {"ce": _l2, "l1": _l1, "smooth_l1": _smooth_l1, "l2": _l2}


def check_loss_for_regression(name: str, regression_tasks: List[str]) -> None:
    """Refuse a classification-only loss when some task is a regression."""
    if regression_tasks and name not in REGRESSION_LOSSES:
        raise TintingConfigError(
            f"loss={name!r} needs class probabilities, but {regression_tasks} predict a single value "
            f"(regression). Use one of {sorted(REGRESSION_LOSSES)} (`ce` = squared error for regression)."
        )


def _channels_last(outputs: Tensor) -> Tensor:
    """A dense prediction (batch, channels, *positions) with its channels last; other outputs unchanged."""
    return outputs.movedim(1, -1) if outputs.ndim > 2 else outputs


def per_sample_loss(name: str, student: Tensor, teacher: Tensor) -> Tensor:
    """Loss of each sample (of each position, for a dense prediction: shape (batch, *positions)), computed
    in fp32 whatever the autocast dtype of the logits."""
    if student.ndim > 2:  # one row per position, then back to (batch, *positions)
        positions = (student.shape[0], *student.shape[2:])
        rows = lambda t: _channels_last(t).reshape(-1, t.shape[1])  # noqa: E731
        return per_sample_loss(name, rows(student), rows(teacher)).reshape(positions)
    student, teacher = student.float(), teacher.float()
    if student.shape[-1] == 1:  # regression head: squared error unless a distance loss is asked for
        return REGRESSION_LOSSES[name](student, teacher)
    return LOSSES[name](student, teacher)


def confidence_filter(student: Tensor, teacher: Tensor) -> Tensor:
    """Model Tinting++: keep a sample unless the merged model disagrees with the teacher and is
    more confident than it. Returns a boolean mask of kept samples (of kept positions, for a dense
    prediction: per pixel)."""
    p_student = _channels_last(student.detach().float()).softmax(dim=-1)
    p_teacher = _channels_last(teacher.float()).softmax(dim=-1)
    conf_s, pred_s = p_student.max(dim=-1)
    conf_t, pred_t = p_teacher.max(dim=-1)
    return ~((pred_s != pred_t) & (conf_s > conf_t))


def warn_about_filtered_regression(regression_tasks: List[str]) -> None:
    """Model Tinting++'s filter compares class confidences: a regression task has none."""
    if regression_tasks:
        logging.getLogger(__name__).warning(
            "Model Tinting++'s confidence filter is undefined for regression tasks %s: "
            "their steps use the plain loss on every sample.",
            regression_tasks,
        )
