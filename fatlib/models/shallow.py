"""3rd place's shallow 2-D CNN with deep supervision (``shallow_cnn_3rd``).

What the write-up states: models "relatively shallow", "10-12 convolutional layers (or 5-6 resnet
blocks) with a small number of filters"; "global max pooling after each block (typically starting from
the first or second block)", the max-pool outputs concatenated into "the final feature vector which then
goes to a 2-layer fully-connected classifier"; a linear frequency map from -1 to 1 "concatenated to
input spectrogram as a second channel" (``freq_encoding=True``, worth >= 0.005 CV); log-mel input
(the ``log128`` preset).

Not published, fatlib's choice: 5 blocks of [conv3x3-BN-ReLU, conv3x3-BN-ReLU] (10 conv layers) of
32-48-64-96-128 channels, a 2x2 max pool after each block but the last, the global max pools taken from
the second block on (``pool_from=2``; 1 takes every block), and the head BN-Dropout 0.25-Linear(., 256)
-ReLU-BN-Dropout 0.5-Linear (the CNN-model-1 head with 256 hidden units). ``residual=True`` builds
the "5-6 resnet blocks" variant as 5 residual blocks of the same widths: conv3x3-BN-ReLU-conv3x3-BN plus
a 1x1 conv-BN shortcut, then ReLU (fatlib's choice of block).

Deep supervision is this model's design, so the registry's ``deep_supervision`` option does not apply.
At width 1, 1 input channel with frequency encoding and 80 classes: 615,376 parameters (residual:
639,216).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .base import MLPHead, block_net, conv_bn_relu, scaled
from .registry import register_model

SHALLOW_CHANNELS = (32, 48, 64, 96, 128)  # not published: fatlib's choice
HEAD_HIDDEN = 256  # not published: fatlib's choice


def third_head(*, n_classes: int, width_mult: float):
    """The 2-layer classifier of the 3rd-place models: BN-Dropout 0.25-Linear(., 256)-ReLU-BN-Dropout 0.5-Linear."""
    return lambda n_features: MLPHead(
        n_features, hidden=scaled(HEAD_HIDDEN, width_mult), n_classes=n_classes, act="relu", dropout=(0.25, 0.5)
    )


class ResBlock2d(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv-BN where the width changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(in_channels, out_channels),
                                  nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
                                  nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def shallow_blocks(in_channels: int, width_mult: float, *, residual: bool = False) -> tuple[list[nn.Module], list[int]]:
    """The 5 conv blocks (2 conv3x3-BN-ReLU each, or residual blocks; 2x2 max pool after all but the last)
    and their widths."""
    chans = [scaled(c, width_mult) for c in SHALLOW_CHANNELS]
    ins = [in_channels, *chans[:-1]]
    blocks = [
        nn.Sequential(
            *([ResBlock2d(ci, co)] if residual else [conv_bn_relu(ci, co), conv_bn_relu(co, co)]),
            *([nn.MaxPool2d(2)] if i < len(chans) - 1 else []),
        )
        for i, (ci, co) in enumerate(zip(ins, chans))
    ]
    return blocks, chans


def check_pool_from(name: str, pool_from, n_blocks: int) -> None:
    if isinstance(pool_from, bool) or not isinstance(pool_from, int) or not 1 <= pool_from <= n_blocks:
        raise ModelError(
            f"{name}: pool_from={pool_from!r}; pass the first block (1-{n_blocks}) whose global max pool feeds the "
            "head (the write-up: the first or the second)."
        )


@register_model(
    deep_supervision=False,
    why_not="shallow_cnn_3rd always feeds the max pools of its blocks (from block pool_from) to its head.",
    published={"in_channels": 1, "freq_encoding": True},
)
def shallow_cnn_3rd(
    *, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, pool_from: int = 2, residual: bool = False
):
    """3rd place's shallow 2-D CNN: 10 conv layers in 5 blocks (``residual``: 5 residual blocks), global
    max pool of every block from ``pool_from`` (1-based) concatenated into a 2-layer classifier. Pass
    ``freq_encoding=True`` as the write-up."""
    if not isinstance(residual, bool):
        raise ModelError(f"create_model('shallow_cnn_3rd'): residual={residual!r}; pass True or False.")
    blocks, chans = shallow_blocks(in_channels + int(freq_encoding), width_mult, residual=residual)
    check_pool_from("shallow_cnn_3rd", pool_from, len(blocks))
    return block_net(
        stem=nn.Identity(),
        blocks=blocks,
        block_channels=chans,
        head=third_head(n_classes=n_classes, width_mult=width_mult),
        pool="max",
        pooled_blocks=tuple(range(pool_from - 1, len(blocks))),
        in_channels=in_channels,
        freq_encoding=freq_encoding,
    )
