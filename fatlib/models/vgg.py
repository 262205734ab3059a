"""VGG16 with batch norm (configuration D: 64,64,M,128,128,M,256x3,M,512x3,M,512x3,M), randomly
initialised, with the CNN-model-1 head (12th place). At width 1 the conv part has exactly the
parameters of torchvision's ``vgg16_bn().features`` (14,723,136).
"""
from __future__ import annotations

from torch import nn

from .base import conv_bn_relu, scaled
from .cnn import cnn_head_net
from .registry import register_model

VGG16_GROUPS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


@register_model
def vgg16_bn(
    *, n_classes: int, in_channels: int, width_mult: float, freq_encoding: bool, deep_supervision: bool
) -> nn.Module:
    """VGG16-BN: 13 conv3x3-BN-ReLU layers in 5 groups, each group ending in a 2x2 max pool."""
    blocks, chans = [], []
    ci = in_channels + int(freq_encoding)
    for group in VGG16_GROUPS:
        layers = []
        for c in group:
            co = scaled(c, width_mult)
            layers.append(conv_bn_relu(ci, co))
            ci = co
        blocks.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
        chans.append(ci)
    return cnn_head_net(blocks, chans, n_classes=n_classes, in_channels=in_channels, width_mult=width_mult,
                        freq_encoding=freq_encoding, deep_supervision=deep_supervision)
