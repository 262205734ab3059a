"""CNN-model-1 (12th place): 4 blocks [conv3x3-BN-ReLU x2, 2x2 average pool] of 64/128/256/512
channels, concat(avg, max) pool, then BN-Dropout-Linear-ReLU-BN-Dropout-Linear.

~5.26 M parameters for 3 input channels and 80 classes (5,258,128 with the conv biases of the
published PyTorch code).
"""
from __future__ import annotations

from torch import nn

from .base import HeadFactory, MLPHead, block_net, conv_bn_relu, scaled
from .registry import register_model

CNN1_CHANNELS = (64, 128, 256, 512)


def cnn_head(*, n_classes: int, width_mult: float, dropout: tuple[float, float] = (0.25, 0.5)) -> HeadFactory:
    """The CNN-model-1 head (also VGG16's): BN-Dropout 0.25-Linear(in, 512)-ReLU-BN-Dropout 0.5-Linear."""
    return lambda n_features: MLPHead(
        n_features, hidden=scaled(512, width_mult), n_classes=n_classes, act="relu", dropout=dropout
    )


def cnn_head_net(
    blocks: list[nn.Module], block_channels: list[int], *, n_classes: int, in_channels: int, width_mult: float,
    freq_encoding: bool, deep_supervision: bool,
) -> nn.Module:
    """Plain conv ``blocks`` (no stem) with the CNN-model-1 head: CNN-model-1 and VGG16-BN."""
    return block_net(
        stem=nn.Identity(),
        blocks=blocks,
        block_channels=block_channels,
        head=cnn_head(n_classes=n_classes, width_mult=width_mult),
        in_channels=in_channels,
        freq_encoding=freq_encoding,
        deep_supervision=deep_supervision,
    )


@register_model
def cnn_model_1(
    *, n_classes: int, in_channels: int, width_mult: float, freq_encoding: bool, deep_supervision: bool
) -> nn.Module:
    """CNN-model-1 of the 12th-place solution."""
    chans = [scaled(c, width_mult) for c in CNN1_CHANNELS]
    ins = [in_channels + int(freq_encoding), *chans[:-1]]
    blocks = [
        nn.Sequential(conv_bn_relu(ci, co), conv_bn_relu(co, co), nn.AvgPool2d(2)) for ci, co in zip(ins, chans)
    ]
    return cnn_head_net(blocks, chans, n_classes=n_classes, in_channels=in_channels, width_mult=width_mult,
                        freq_encoding=freq_encoding, deep_supervision=deep_supervision)
