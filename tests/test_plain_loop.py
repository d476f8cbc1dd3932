"""The adaptation loop against a plain, obviously-correct one written from docs/algorithm.md: per-tensor
merge as a Python sum, a fresh ``functional_call``, cross-entropy on the teacher's argmax, Adam, one
step per task in random order. Same data order (same seed), fp32: the results agree tightly."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fusion_bench_tinting.core.adaptation import AdaptationOptions, TintingTrainer
from fusion_bench_tinting.core.data import EpochSampler, TensorInputs
from fusion_bench_tinting.core.merging import LayerWiseMerger
from fusion_bench_tinting.core.run_state import TaskState

K, STEPS, LR, BATCH = 3, 4, 0.02, 8


def _suite():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 12), nn.GELU(), nn.LayerNorm(12), nn.Linear(12, 7)).requires_grad_(False)
    pretrained = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    finetuned, heads, inputs, teachers = [], [], [], []
    for _ in range(K):
        model = copy.deepcopy(encoder)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.4 * torch.randn_like(p))
        head = nn.Linear(7, 4)
        x = torch.randn(30, 5)
        with torch.no_grad():
            teachers.append(head(model(x)))
        finetuned.append({n: p.detach().clone() for n, p in model.named_parameters()})
        heads.append(head)
        inputs.append(x)
    return encoder, pretrained, finetuned, heads, inputs, teachers


def _plain_loop(encoder, pretrained, finetuned, heads, inputs, teachers, clamp: bool):
    names = list(pretrained)
    vectors = [{n: ft[n] - pretrained[n] for n in names} for ft in finetuned]
    coefficients = nn.Parameter(torch.full((K, len(names)), 0.3))
    heads = [copy.deepcopy(h) for h in heads]
    optimizer = torch.optim.Adam([coefficients, *[p for h in heads for p in h.parameters()]], lr=LR)
    generator = torch.Generator().manual_seed(0)
    samplers = [EpochSampler(len(x), BATCH, generator) for x in inputs]
    for _ in range(STEPS):
        for k in torch.randperm(K, generator=generator).tolist():
            optimizer.zero_grad(set_to_none=True)
            c = coefficients.clamp(0, 1) if clamp else coefficients
            merged = {n: pretrained[n] + sum(c[j, i] * vectors[j][n] for j in range(K)) for i, n in enumerate(names)}
            rows = samplers[k].next()
            logits = heads[k](functional_call(encoder, merged, (inputs[k][rows],)))
            F.cross_entropy(logits, teachers[k][rows].argmax(-1)).backward()
            optimizer.step()
    return coefficients.detach(), heads


def _trainer_loop(encoder, pretrained, finetuned, heads, inputs, teachers, clamp: bool):
    merger = LayerWiseMerger(pretrained, K, init_value=0.3, clamp=clamp)
    for k, ft in enumerate(finetuned):
        merger.set_task_vector(k, ft)
    merger.check_complete()
    states = [
        TaskState(name=f"t{k}", inputs=TensorInputs(inputs[k]), teacher=teachers[k], head=copy.deepcopy(heads[k]))
        for k in range(K)
    ]
    trainer = TintingTrainer(
        merger,
        lambda params, x: functional_call(encoder, dict(params), (x,)),
        states,
        AdaptationOptions(max_steps=STEPS, lr=LR, batch_size=BATCH),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    trainer.run()
    return merger.coefficients.detach(), [s.head for s in states]


@pytest.mark.parametrize("clamp", [True, False])
def test_trainer_agrees_with_a_plain_loop(clamp):
    suite = _suite()
    plain_coefficients, plain_heads = _plain_loop(*suite, clamp=clamp)
    coefficients, heads = _trainer_loop(*suite, clamp=clamp)
    assert not torch.allclose(coefficients, torch.full_like(coefficients, 0.3))  # it did move
    assert torch.allclose(coefficients, plain_coefficients, atol=1e-6)
    for head, plain in zip(heads, plain_heads):
        for p, q in zip(head.parameters(), plain.parameters()):
            assert torch.allclose(p, q, atol=1e-6)
