"""Losses: LSEP against the naive formula and at extreme logits, BCE against torch, focal, registry."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fatlib.errors import DataError
from fatlib.losses import BCEWithLogitsSoft, FocalLoss, LSEPLoss, get_loss


def _naive_lsep(logits, target):
    out = []
    for s, y in zip(logits.tolist(), target.tolist()):
        total = sum(math.exp(s[j] - s[i]) for i in range(len(s)) for j in range(len(s))
                    if y[i] == 1 and y[j] == 0)
        out.append(math.log1p(total))
    return torch.tensor(out, dtype=torch.float64)


def test_lsep_equals_naive_formula_on_small_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1],
                           [0, 1, 0, 0, 0], [1, 1, 0, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.float64)
    per_clip = LSEPLoss(reduction="none")(logits, target)
    expected = _naive_lsep(logits, target)
    assert torch.allclose(per_clip, expected, rtol=1e-12, atol=1e-12)
    assert per_clip[1] == 0 and per_clip[2] == 0                   # no positives / no negatives
    assert torch.isclose(LSEPLoss()(logits, target), expected.mean())


def test_lsep_finite_value_and_gradient_at_extreme_logits():
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0], [-100.0, 100.0, 0.0, 0.0],
                           [100.0, 100.0, 100.0, 100.0], [-100.0, -100.0, -100.0, -100.0]],
                          requires_grad=True)
    target = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    per_clip = LSEPLoss(reduction="none")(logits, target)
    assert torch.isfinite(per_clip).all()
    assert per_clip[0].item() == pytest.approx(200 + math.log(4), rel=1e-5)   # 4 pairs at exp(200)
    per_clip.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[3].abs().sum() == 0
    assert logits.grad[0, 1] < 0 and logits.grad[0, 0] > 0   # push positives up, negatives down


def test_lsep_prefers_positives_ranked_above_negatives():
    target = torch.tensor([[1.0, 0.0, 0.0]])
    good = LSEPLoss()(torch.tensor([[3.0, -1.0, -2.0]]), target)
    bad = LSEPLoss()(torch.tensor([[-3.0, 1.0, 2.0]]), target)
    assert good < bad


def test_bce_equals_torch_on_hard_targets_and_handles_soft_targets():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 6, generator=g)
    hard = (torch.rand(8, 6, generator=g) > 0.7).float()
    assert torch.allclose(BCEWithLogitsSoft()(logits, hard), F.binary_cross_entropy_with_logits(logits, hard))
    soft = torch.rand(8, 6, generator=g)
    p = torch.sigmoid(logits.double())
    manual = -(soft * torch.log(p) + (1 - soft) * torch.log(1 - p))
    assert torch.allclose(BCEWithLogitsSoft(reduction="none")(logits, soft).double(), manual, atol=1e-5)


def test_focal_downweights_easy_examples_and_gamma_zero_is_bce():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, generator=g)
    target = (torch.rand(5, 4, generator=g) > 0.5).float()
    assert torch.allclose(FocalLoss(gamma=0)(logits, target), BCEWithLogitsSoft()(logits, target))
    focal = FocalLoss(reduction="none")(logits, target)
    bce = BCEWithLogitsSoft(reduction="none")(logits, target)
    assert (focal <= bce).all() and (focal < bce).any()


def test_registry_activation_and_errors():
    for name, cls in [("bce", BCEWithLogitsSoft), ("LSEP", LSEPLoss), ("focal", FocalLoss)]:
        loss = get_loss(name)
        assert isinstance(loss, cls)
        assert torch.allclose(loss.activation(torch.zeros(2, 3)), torch.full((2, 3), 0.5))
    with pytest.raises(DataError, match="unknown loss 'hinge'"):
        get_loss("hinge")
    with pytest.raises(DataError, match="class indices"):
        get_loss("bce")(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="reduction"):
        get_loss("lsep", reduction="avg")
