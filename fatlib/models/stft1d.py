"""3rd place's 1-D CNN over a short-window STFT (``stft1d_3rd``).

What the write-up states: a second model family "uses 1d-convolutions on top of raw STFT
representations with relatively small window size like 256, so it's only 5 ms per frame or so";
like the 2-D models it is "relatively shallow" (10-12 conv layers, few filters) with "global max
pooling after each block (typically starting from the first or second block)" concatenated into "a
2-layer fully-connected classifier".

Input: ``(batch, in_channels, n_bins, frames)``; the frequency bins of every channel become the input
channels of the 1-D convolutions, which run over time. The model is built for ``n_bins`` rows and
says so when given another number.

Deviates (why): the write-up feeds the raw, linear-frequency STFT (129 bins of a 256-sample window).
fatlib's feature pipeline (``fatlib.logmel.LogMel``, the cache and on-device features) computes mel
bands only, so the ``stft256`` preset feeds log(mel + 1e-4) of the same 256-sample STFT (hop 128) in 40
mel bands: the most a 256-sample window fills at 44.1 kHz (more bands leave empty filters: 48 bands 1,
64 bands 6). With a linear-frequency feature mode the model takes ``n_bins=129`` unchanged.

Not published, fatlib's choice: 5 blocks of [conv1d k3-BN-ReLU, conv1d k3-BN-ReLU] (10 conv layers) of
64-96-128-192-256 channels, a max pool of 2 frames after each block but the last, the global max pools
from the second block on (``pool_from=2``), the head of ``shallow_cnn_3rd`` (hidden 256). Frequency
encoding does not apply: each frequency bin is an input channel with its own weights.
At width 1, 1 input channel, 40 bins and 80 classes: 879,568 parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .base import BlockNet, scaled
from .registry import register_model
from .shallow import check_pool_from, third_head

STFT1D_CHANNELS = (64, 96, 128, 192, 256)  # not published: fatlib's choice
N_BINS = 40  # rows of the stft256 preset
MIN_FRAMES = 16  # 4 halvings leave 1 frame


class BinsToChannels(nn.Module):
    """(batch, channels, n_bins, frames) -> (batch, channels * n_bins, frames)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)


class Stft1dNet(BlockNet):
    """A :class:`BlockNet` of 1-D blocks over time, checking the input's frequency rows."""

    def __init__(self, *, n_bins: int, **kwargs):
        super().__init__(**kwargs)
        self.n_bins = n_bins

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.n_bins:
            raise ModelError(
                f"model input has shape {tuple(x.shape)}; stft1d_3rd expects (batch, {self.in_channels}, "
                f"{self.n_bins} frequency bins, frames). Create it with in_channels and n_bins of the features "
                "(n_bins=40: the stft256 preset)."
            )
        if x.shape[3] < MIN_FRAMES:
            raise ModelError(f"model input has {x.shape[3]} frames; stft1d_3rd needs at least {MIN_FRAMES}. "
                             "Use a longer crop (crop_frames).")


def conv1d_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv1d k3 (padding 1, with bias) -> BatchNorm1d -> ReLU."""
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
    )


@register_model(
    deep_supervision=False,
    why_not="stft1d_3rd always feeds the max pools of its blocks (from block pool_from) to its head.",
    published={"in_channels": 1},
)
def stft1d_3rd(
    *, n_classes, in_channels, width_mult, freq_encoding, deep_supervision, n_bins: int = N_BINS, pool_from: int = 2
):
    """3rd place's 1-D CNN: frequency bins as channels, 10 conv1d layers in 5 blocks over time, global
    max pool of every block from ``pool_from`` into a 2-layer classifier. ``n_bins``: frequency rows of
    the input (40: the ``stft256`` preset)."""
    if freq_encoding:
        raise ModelError(
            "create_model('stft1d_3rd'): freq_encoding does not apply: each frequency bin is an input channel "
            "of the 1-D convolutions, with its own weights. Use freq_encoding=False."
        )
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ModelError(f"create_model('stft1d_3rd'): n_bins={n_bins!r}; pass the frequency rows of the features "
                         "(40 for the stft256 preset).")
    chans = [scaled(c, width_mult) for c in STFT1D_CHANNELS]
    check_pool_from("stft1d_3rd", pool_from, len(chans))
    ins = [in_channels * n_bins, *chans[:-1]]
    blocks = [
        nn.Sequential(conv1d_bn_relu(ci, co), conv1d_bn_relu(co, co), *([nn.MaxPool1d(2)] if i < len(chans) - 1 else []))
        for i, (ci, co) in enumerate(zip(ins, chans))
    ]
    return Stft1dNet(
        n_bins=n_bins,
        stem=BinsToChannels(),
        blocks=blocks,
        block_channels=chans,
        head=third_head(n_classes=n_classes, width_mult=width_mult),
        pool="max",
        pooled_blocks=tuple(range(pool_from - 1, len(blocks))),
        in_channels=in_channels,
    )
