"""Dense ConvBlock models of the 9th place (1 input channel in the original, 64 mels x 256 frames).

ConvBlock(in, out): conv3x3(in -> out)-BN-ReLU gives x1; conv3x3(in + out -> out) on concat(x, x1)
-BN-ReLU; then a 2x2 average pool (none after M3's last block).
M1: blocks 64-128-256-512, concat pool (1024) -> BN-Linear(1024, 128)-PReLU-BN-Linear(n_classes).
M2: M1 with "a pyramidal pooling for 2,3 and 4-th" blocks (write-up; CV slightly below M1's): concat
pool of blocks 2-4 (1792 features); its head is not published: M1's (hidden 128, fatlib's choice).
M3: blocks 64-128-256-512-1024, concat pool of blocks 2-5 (pyramid pooling: 3840 features)
-> BN-Linear(3840, 256)-PReLU-BN-Linear(n_classes). M2 and M3 take no ``deep_supervision``: their
pyramid pooling already feeds pooled block outputs to the head.

Multisample Dropout (write-up: "In several model we also used Multisample Dropout (other models were
trained without dropout); though, it decreased CV by ~0.002"): ``multisample_dropout=K`` applies K
dropout masks to the input of the last linear layer, which is shared, and averages the K logits
(Inoue 2019, "Multi-Sample Dropout"); in eval mode it is the plain layer. K, the dropout probability
(``multisample_p``) and the place in the head are not published: the last layer, p 0.5 (fatlib's
choice). 0 (the default) leaves the models as published, without dropout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import MLPHead, block_net, conv_bn_relu, scaled
from .registry import register_model


class DenseConvBlock(nn.Module):
    """conv-BN-ReLU, then conv-BN-ReLU on concat(input, first conv), then optional 2x2 avg pool."""

    def __init__(self, in_channels: int, out_channels: int, *, pool: bool = True):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels, out_channels)
        self.conv2 = conv_bn_relu(in_channels + out_channels, out_channels)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv2(torch.cat([x, self.conv1(x)], dim=1)))


class MultiSampleLinear(nn.Linear):
    """A linear layer behind ``samples`` dropout masks (probability ``p``) whose outputs are averaged in
    training; the plain layer in eval mode. Same parameters (and state-dict keys) as ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, *, samples: int, p: float):
        super().__init__(in_features, out_features)
        self.samples, self.p = samples, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        return torch.stack([super(MultiSampleLinear, self).forward(F.dropout(x, self.p, training=True))
                            for _ in range(self.samples)]).mean(dim=0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, samples={self.samples}, p={self.p}"


def _check_multisample(multisample_dropout, multisample_p) -> None:
    k = multisample_dropout
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ModelError(f"multisample_dropout={k!r}; pass the number of dropout samples (0: off, e.g. 5).")
    p = multisample_p
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ModelError(f"multisample_p={p!r}; pass a dropout probability in [0, 1).")


def _dense(
    *,
    widths: tuple[int, ...],
    last_pool: bool,
    pooled_blocks: tuple[int, ...],
    hidden: int,
    n_classes: int,
    in_channels: int,
    width_mult: float,
    freq_encoding: bool,
    deep_supervision: bool,
    multisample_dropout: int,
    multisample_p: float,
) -> nn.Module:
    _check_multisample(multisample_dropout, multisample_p)
    chans = [scaled(c, width_mult) for c in widths]
    ins = [in_channels + int(freq_encoding), *chans[:-1]]
    pools = [True] * (len(widths) - 1) + [last_pool]
    blocks = [DenseConvBlock(ci, co, pool=p) for ci, co, p in zip(ins, chans, pools)]
    def head(n_features: int) -> nn.Module:
        mlp = MLPHead(n_features, hidden=scaled(hidden, width_mult), n_classes=n_classes, act="prelu", dropout=(0, 0))
        if multisample_dropout:
            mlp[-1] = MultiSampleLinear(mlp[-1].in_features, n_classes, samples=multisample_dropout, p=multisample_p)
        return mlp

    return block_net(
        stem=nn.Identity(),
        blocks=blocks,
        block_channels=chans,
        head=head,
        pooled_blocks=pooled_blocks,
        in_channels=in_channels,
        freq_encoding=freq_encoding,
        deep_supervision=deep_supervision,
    )


@register_model(published={"in_channels": 1})
def dense_m1(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, multisample_dropout: int = 0,
             multisample_p: float = 0.5):
    """Dense ConvBlock model M1 (9th place): 4 blocks, concat pool of the last, hidden 128."""
    return _dense(widths=(64, 128, 256, 512), last_pool=True, pooled_blocks=(-1,), hidden=128, **locals())


@register_model(
    deep_supervision=False,
    why_not="dense_m2 already feeds the pooled outputs of blocks 2-4 to its head (pyramid pooling).",
    published={"in_channels": 1},
)
def dense_m2(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, multisample_dropout: int = 0,
             multisample_p: float = 0.5):
    """Dense ConvBlock model M2 (9th place): M1's 4 blocks, pyramid pooling of blocks 2-4, hidden 128."""
    return _dense(widths=(64, 128, 256, 512), last_pool=True, pooled_blocks=(1, 2, 3), hidden=128, **locals())


@register_model(
    deep_supervision=False,
    why_not="dense_m3 already feeds the pooled outputs of blocks 2-5 to its head (pyramid pooling).",
    published={"in_channels": 1},
)
def dense_m3(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, multisample_dropout: int = 0,
             multisample_p: float = 0.5):
    """Dense ConvBlock model M3 (9th place): 5 blocks (last unpooled), pyramid pooling of blocks 2-5."""
    return _dense(
        widths=(64, 128, 256, 512, 1024), last_pool=False, pooled_blocks=(1, 2, 3, 4), hidden=256, **locals()
    )
