"""Building blocks shared by every architecture: the block network skeleton, heads, pooling,
frequency encoding, channel scaling and the input check.

Every model is a :class:`BlockNet`: ``stem -> blocks -> pool(selected blocks) -> head``. Input
``(batch, in_channels, n_mels, frames)``, output logits ``(batch, n_classes)``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ModelError  # defined in fatlib.errors; still importable from here

MIN_INPUT_SIZE = 32  # mel bins and frames: 5 halvings (VGG, XResNet) still leave 1x1


def scaled(channels: int, width_mult: float) -> int:
    """``channels`` scaled by ``width_mult`` (rounded, at least 1)."""
    return max(1, int(round(channels * width_mult)))


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv 3x3 (stride 1, padding 1, with bias as in the published models) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FreqEncoding(nn.Module):
    """Append one channel holding linspace(-1, 1) along the mel axis, constant in time (3rd place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n_mels, frames = x.shape
        enc = torch.linspace(-1.0, 1.0, n_mels, device=x.device, dtype=x.dtype)
        return torch.cat([x, enc.view(1, 1, n_mels, 1).expand(b, 1, n_mels, frames)], dim=1)


class GlobalPool(nn.Module):
    """Global pooling to ``(batch, features)``: "avg", "max" or "concat" (avg and max side by side),
    over every axis after the channels (2-D maps and 1-D sequences alike)."""

    factors = {"avg": 1, "max": 1, "concat": 2}

    def __init__(self, kind: str):
        super().__init__()
        if kind not in self.factors:
            raise ModelError(f"pool={kind!r} is not one of {sorted(self.factors)}.")
        self.kind = kind

    def n_features(self, channels: int) -> int:
        """Pooled features of a block with ``channels`` channels."""
        return self.factors[self.kind] * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        if self.kind == "avg":
            return x.mean(dim=dims)
        if self.kind == "max":
            return x.amax(dim=dims)
        return torch.cat([x.mean(dim=dims), x.amax(dim=dims)], dim=1)


class MLPHead(nn.Sequential):
    """BN -> Dropout -> Linear(in, hidden) -> act -> BN -> Dropout -> Linear(hidden, n_classes).

    CNN-model-1 / VGG16: hidden 512, ReLU, dropout (0.25, 0.5). Dense M1/M3 (9th place): hidden
    128/256, PReLU, no dropout. A dropout of 0 adds no layer, so the module names stay stable.
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden: int,
        n_classes: int,
        act: str = "relu",
        dropout: Sequence[float] = (0.25, 0.5),
    ):
        acts: dict[str, Callable[[], nn.Module]] = {"relu": lambda: nn.ReLU(inplace=True), "prelu": nn.PReLU}
        if act not in acts:
            raise ModelError(f"head act={act!r} is not one of {sorted(acts)}.")
        p1, p2 = dropout
        layers = [nn.BatchNorm1d(in_features)]
        layers += [nn.Dropout(p1)] if p1 > 0 else []
        layers += [nn.Linear(in_features, hidden), acts[act](), nn.BatchNorm1d(hidden)]
        layers += [nn.Dropout(p2)] if p2 > 0 else []
        layers += [nn.Linear(hidden, n_classes)]
        super().__init__(*layers)


HeadFactory = Callable[[int], nn.Module]  # number of pooled features -> head


class BlockNet(nn.Module):
    """``[freq encoding] -> stem -> blocks -> pool(blocks in pooled_blocks), concatenated -> head``.

    ``block_channels[i]`` is the output channel count of ``blocks[i]``; ``pooled_blocks`` indexes the
    blocks whose pooled outputs feed the head (``(-1,)``: the last only). ``deep_supervision=True``
    (3rd place) replaces the pooling by a global max pool after every block, concatenated, into
    ``deep_head`` (default: ``head``, a 2-layer MLP). ``pool`` may also be a module with an
    ``n_features(channels)`` method (e.g. an RNN over time) applied to each pooled block.
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        blocks: Sequence[nn.Module],
        block_channels: Sequence[int],
        head: HeadFactory,
        in_channels: int,
        pool: str | nn.Module = "concat",
        pooled_blocks: Sequence[int] = (-1,),
        freq_encoding: bool = False,
        deep_supervision: bool = False,
        deep_head: HeadFactory | None = None,
    ):
        super().__init__()
        if deep_supervision:
            pool, pooled_blocks, head = "max", range(len(blocks)), deep_head or head
        self.in_channels = in_channels
        self.freq = FreqEncoding() if freq_encoding else nn.Identity()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        n = len(self.blocks)
        self.pooled_blocks = sorted({i % n for i in pooled_blocks})
        self.pool = GlobalPool(pool) if isinstance(pool, str) else pool
        n_features = sum(self.pool.n_features(block_channels[i]) for i in self.pooled_blocks)
        self.n_features = n_features
        self.head = head(n_features)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"model input has shape {tuple(x.shape)}; expected (batch, {self.in_channels}, n_mels, frames). "
                f"Create the model with in_channels={x.shape[1] if x.ndim == 4 else '?'} or convert the "
                "features with fatlib.features.to_model_input."
            )
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ModelError(
                f"model input is {x.shape[2]} mel bins x {x.shape[3]} frames; the models need at least "
                f"{MIN_INPUT_SIZE} x {MIN_INPUT_SIZE}. Use more mels or a longer crop (crop_frames)."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(self.freq(x))
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.pooled_blocks:
                pooled.append(self.pool(x))
        return self.head(torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0])


block_net = BlockNet  # the name the architecture modules build with

def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
