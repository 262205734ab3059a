"""XResNet 18/34/50 (95th place): ResNet with the "Bag of Tricks" changes, built from fastai.layers'
``ConvLayer`` and ``ResBlock`` (3-conv stem 32-32-64, stride in the 3x3 conv, average-pool shortcut
when downsampling, zero-initialised last BN of each residual branch).

At width 1 the parameter count equals fastai's ``xresnet18/34/50(c_in=..., n_out=...)``;
``fastai.vision`` itself is not imported (it pulls in torchvision). Head: average pool -> Dropout(p)
-> Linear. With ``deep_supervision`` the max-pooled outputs of the 4 stages go to a 2-layer head
(BN-Dropout(p)-Linear(., 512)-ReLU-BN-Dropout(p)-Linear, widths scaled by ``width_mult``).
"""
from __future__ import annotations

from fastai.layers import ConvLayer, ResBlock
from torch import nn

from ..errors import ModelError
from .base import MLPHead, block_net, scaled
from .registry import register_model

STEM = (32, 32, 64)
STAGES = (64, 128, 256, 512)


def _init_cnn(m: nn.Module) -> None:
    """fastai's xresnet init: Kaiming-normal conv/linear weights, zero biases."""
    if getattr(m, "bias", None) is not None:
        nn.init.constant_(m.bias, 0)
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight)
    for child in m.children():
        _init_cnn(child)


def _xresnet(
    *,
    expansion: int,
    layers: tuple[int, ...],
    n_classes: int,
    in_channels: int,
    width_mult: float,
    freq_encoding: bool,
    deep_supervision: bool,
    p: float,
) -> nn.Module:
    if not 0 <= p < 1:
        raise ModelError(f"xresnet: dropout p={p!r}; pass a probability in [0, 1).")
    # stage widths are in units of 1/expansion; the stem's output feeds the first stage
    sizes = [max(1, scaled(STAGES[0], width_mult) // expansion)] + [scaled(c, width_mult) for c in STAGES]
    stem_sizes = [in_channels + int(freq_encoding), scaled(STEM[0], width_mult), scaled(STEM[1], width_mult)]
    stem_sizes.append(sizes[0] * expansion)
    stem = nn.Sequential(
        *[ConvLayer(stem_sizes[i], stem_sizes[i + 1], ks=3, stride=2 if i == 0 else 1) for i in range(3)],
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stages = [
        nn.Sequential(
            *[
                ResBlock(expansion, sizes[i] if j == 0 else sizes[i + 1], sizes[i + 1], stride=2 if i and j == 0 else 1)
                for j in range(n)
            ]
        )
        for i, n in enumerate(layers)
    ]
    model = block_net(
        stem=stem,
        blocks=stages,
        block_channels=[s * expansion for s in sizes[1:]],
        head=lambda n_features: nn.Sequential(nn.Dropout(p), nn.Linear(n_features, n_classes)),
        pool="avg",
        in_channels=in_channels,
        freq_encoding=freq_encoding,
        deep_supervision=deep_supervision,
        deep_head=lambda n_features: MLPHead(
            n_features, hidden=scaled(512, width_mult), n_classes=n_classes, act="relu", dropout=(p, p)
        ),
    )
    _init_cnn(model)
    return model


@register_model
def xresnet18(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, p: float = 0.0):
    """XResNet-18: basic blocks [2, 2, 2, 2]; ``p``: dropout before the final linear layer."""
    return _xresnet(expansion=1, layers=(2, 2, 2, 2), **locals())


@register_model
def xresnet34(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, p: float = 0.0):
    """XResNet-34: basic blocks [3, 4, 6, 3]; ``p``: dropout before the final linear layer."""
    return _xresnet(expansion=1, layers=(3, 4, 6, 3), **locals())


@register_model
def xresnet50(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, p: float = 0.0):
    """XResNet-50: bottleneck blocks [3, 4, 6, 3] (expansion 4); ``p``: dropout before the final linear."""
    return _xresnet(expansion=4, layers=(3, 4, 6, 3), **locals())
