"""Dense ConvBlock models of the 9th place (1 input channel in the original, 64 mels x 256 frames).

ConvBlock(in, out): conv3x3(in -> out)-BN-ReLU gives x1; conv3x3(in + out -> out) on concat(x, x1)
-BN-ReLU; then a 2x2 average pool (none after M3's last block).
M1: blocks 64-128-256-512, concat pool (1024) -> BN-Linear(1024, 128)-PReLU-BN-Linear(n_classes).
M3: blocks 64-128-256-512-1024, concat pool of blocks 2-5 (pyramid pooling: 3840 features)
-> BN-Linear(3840, 256)-PReLU-BN-Linear(n_classes). M3 takes no ``deep_supervision``: its pyramid
pooling already feeds pooled block outputs to the head.
"""
from __future__ import annotations

import torch
from torch import nn

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
) -> nn.Module:
    chans = [scaled(c, width_mult) for c in widths]
    ins = [in_channels + int(freq_encoding), *chans[:-1]]
    pools = [True] * (len(widths) - 1) + [last_pool]
    blocks = [DenseConvBlock(ci, co, pool=p) for ci, co, p in zip(ins, chans, pools)]
    return block_net(
        stem=nn.Identity(),
        blocks=blocks,
        block_channels=chans,
        head=lambda n_features: MLPHead(
            n_features, hidden=scaled(hidden, width_mult), n_classes=n_classes, act="prelu", dropout=(0, 0)
        ),
        pooled_blocks=pooled_blocks,
        in_channels=in_channels,
        freq_encoding=freq_encoding,
        deep_supervision=deep_supervision,
    )


@register_model
def dense_m1(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision):
    """Dense ConvBlock model M1 (9th place): 4 blocks, concat pool of the last, hidden 128."""
    return _dense(widths=(64, 128, 256, 512), last_pool=True, pooled_blocks=(-1,), hidden=128, **locals())


@register_model(
    deep_supervision=False,
    why_not="dense_m3 already feeds the pooled outputs of blocks 2-5 to its head (pyramid pooling).",
)
def dense_m3(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision):
    """Dense ConvBlock model M3 (9th place): 5 blocks (last unpooled), pyramid pooling of blocks 2-5."""
    return _dense(
        widths=(64, 128, 256, 512, 1024), last_pool=False, pooled_blocks=(1, 2, 3, 4), hidden=256, **locals()
    )
