"""3rd place's RNN variant (``shallow_crnn_3rd``): the shallow 2-D CNN with an RNN in place of the
max pooling.

What the write-up states: "I also tried using RNN's instead of a max pooling for some models. It made
results a bit worse, but RNN seemed to make different mistakes, so it turned out to be a good member of
the final ensemble" (the final average of 11 models mixes "rnn/no-rnn").

Not published, fatlib's choice: the conv body of ``shallow_cnn_3rd`` (5 blocks, 32-48-64-96-128
channels, ``freq_encoding`` as there); the last block's map max-pooled over the mel axis into a
sequence over time, read by a 1-layer bidirectional GRU of 128 units per direction; its two final
hidden states (256 features) go to the 2-layer classifier of ``shallow_cnn_3rd`` (hidden 256). The
RNN replaces the per-block max pools, so the registry's ``deep_supervision`` does not apply.
At width 1, 1 input channel with frequency encoding and 80 classes: 792,880 parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import block_net, scaled
from .registry import register_model
from .shallow import shallow_blocks, third_head

GRU_HIDDEN = 128  # not published: fatlib's choice


class GRUPool(nn.Module):
    """(batch, channels, n_mels, frames) -> max over the mel axis -> bidirectional GRU over the frames
    -> the final hidden states of both directions, (batch, 2 * hidden)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRU(channels, hidden, batch_first=True, bidirectional=True)

    def n_features(self, channels: int) -> int:
        return 2 * self.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.amax(dim=2).transpose(1, 2)  # (batch, frames, channels)
        _, h = self.gru(seq)  # h: (2 directions, batch, hidden)
        return torch.cat([h[0], h[1]], dim=1)


@register_model(
    deep_supervision=False,
    why_not="shallow_crnn_3rd reads its last block with an RNN in place of the per-block max pools.",
    published={"in_channels": 1, "freq_encoding": True},
)
def shallow_crnn_3rd(*, n_classes, in_channels, width_mult, freq_encoding, deep_supervision):
    """3rd place's RNN variant: the ``shallow_cnn_3rd`` conv body, a bidirectional GRU over time on the
    last block, its final states into the 2-layer classifier. Pass ``freq_encoding=True`` as the write-up."""
    blocks, chans = shallow_blocks(in_channels + int(freq_encoding), width_mult)
    return block_net(
        stem=nn.Identity(),
        blocks=blocks,
        block_channels=chans,
        head=third_head(n_classes=n_classes, width_mult=width_mult),
        pool=GRUPool(chans[-1], scaled(GRU_HIDDEN, width_mult)),
        pooled_blocks=(-1,),
        in_channels=in_channels,
        freq_encoding=freq_encoding,
    )
