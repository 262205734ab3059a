"""Multi-label losses on logits with soft float targets in [0, 1] (mixup / SpecMix targets).

All losses take ``(logits, target)`` of the same shape ``(batch, n_classes)`` and have a mutable
``reduction`` ("mean" | "sum" | "none") so fastai can ask for per-item losses, an ``activation``
(sigmoid) that fastai's ``get_preds`` applies, and ``decodes`` (probability > ``thresh``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fatlib.errors import DataError

__all__ = ["LOSSES", "BCEWithLogitsSoft", "FocalLoss", "LSEPLoss", "MultiLabelLoss", "get_loss"]

_REDUCTIONS = ("mean", "sum", "none")


class MultiLabelLoss(nn.Module):
    """Base: input checks, reduction, sigmoid activation and thresholded decodes."""

    def __init__(self, *, reduction: str = "mean", thresh: float = 0.5):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise DataError(f"reduction={reduction!r} is not one of {_REDUCTIONS}")
        self.reduction, self.thresh = reduction, float(thresh)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or target.shape != logits.shape:
            raise DataError(f"{type(self).__name__}: logits {tuple(logits.shape)} and target "
                            f"{tuple(target.shape)} must both be (batch, n_classes); pass multi-hot float "
                            "targets in vocabulary order, not class indices")
        if not target.is_floating_point():
            raise DataError(f"{type(self).__name__}: target dtype {target.dtype} must be float (soft targets)")
        loss = self.elementwise(logits, target.to(logits.dtype))
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def elementwise(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def decodes(self, probs: torch.Tensor) -> torch.Tensor:
        return probs > self.thresh


class BCEWithLogitsSoft(MultiLabelLoss):
    """Binary cross-entropy with logits on soft targets; ``reduction="none"`` gives (batch, n_classes)."""

    def elementwise(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


class FocalLoss(MultiLabelLoss):
    """Focal loss (gamma 2): BCE weighted by (1 - p_t)^gamma, p_t = p y + (1 - p)(1 - y)."""

    def __init__(self, *, gamma: float = 2.0, reduction: str = "mean", thresh: float = 0.5):
        super().__init__(reduction=reduction, thresh=thresh)
        if gamma < 0:
            raise DataError(f"gamma={gamma!r} must be >= 0")
        self.gamma = float(gamma)

    def elementwise(self, logits, target):
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        return (1 - p_t).pow(self.gamma) * bce


class LSEPLoss(MultiLabelLoss):
    """LSEP (3rd place): per clip log(1 + sum_{i pos, j neg} exp(s_j - s_i)).

    Computed as ``logsumexp([0] + [s_j - s_i + log w_ij])`` over the pairwise differences, with pair
    weights w_ij = y_i (1 - y_j): for hard targets w is 1 on (positive, negative) pairs and 0 (masked,
    -inf) elsewhere, so it is exactly the formula above; soft targets weigh the pairs. A clip with no
    positive or no negative label has no pair and a loss of exactly 0 (finite gradient).
    ``reduction="none"`` gives one value per clip. Memory: batch x n_classes^2.
    """

    def elementwise(self, logits, target):
        diff = logits.unsqueeze(1) - logits.unsqueeze(2)             # [b, i, j] = s_j - s_i
        weight = target.unsqueeze(2) * (1 - target).unsqueeze(1)     # [b, i, j] = y_i (1 - y_j)
        pair = diff + torch.log(weight.clamp_min(torch.finfo(weight.dtype).tiny))
        pair = pair.masked_fill(weight <= 0, float("-inf")).flatten(1)
        zero = torch.zeros(pair.shape[0], 1, dtype=pair.dtype, device=pair.device)
        return torch.logsumexp(torch.cat([zero, pair], dim=1), dim=1)


LOSSES: dict[str, type[MultiLabelLoss]] = {"bce": BCEWithLogitsSoft, "lsep": LSEPLoss, "focal": FocalLoss}


def get_loss(name: str, **kwargs) -> MultiLabelLoss:
    """A new loss by name: "bce" | "lsep" | "focal" (case ignored); kwargs go to the class."""
    key = str(name).lower()
    if key not in LOSSES:
        raise DataError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[key](**kwargs)
