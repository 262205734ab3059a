"""Batch augmentation callbacks: exact SpecMix targets, training-only behaviour, seeds, ranges."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fatlib.augment import (
    AUGMENTS,
    SpecMix,
    SpecMixParams,
    apply_augment,
    get_augment,
    make_generator,
    specmix_mask,
    specmix_share,
)
from fatlib.errors import DataError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(batch=8, n_classes=5, *, seed=0, soft=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, 16, 20, generator=g)
    y = torch.rand(batch, n_classes, generator=g)
    return x, (y if soft else (y > 0.6).float())


def _constant_batch(batch=6, *, seed=0):
    """Sample i is the constant value v_i (per channel); its target is one-hot class i."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, 2, dtype=torch.float64, generator=g)
    x = values.view(batch, 2, 1, 1).expand(batch, 2, 12, 16).contiguous()
    return x, torch.eye(batch, dtype=torch.float64), values


def test_specmix_share_is_exact_partner_pixel_share_for_known_masks():
    n_mels, n_frames = 16, 20
    params = SpecMixParams(f0=torch.tensor([0, 3, 10, 5]), f=torch.tensor([0, 4, 6, 3]),
                           t0=torch.tensor([0, 0, 14, 7]), t=torch.tensor([0, 5, 6, 0]))
    mask = specmix_mask(params, n_mels, n_frames)
    counts = mask.sum(dim=(1, 2, 3))
    expected = params.f * n_frames + params.t * n_mels - params.f * params.t
    assert counts.tolist() == expected.tolist() == [0, 4 * 20 + 5 * 16 - 20, 6 * 20 + 6 * 16 - 36, 3 * 20]
    share = specmix_share(params, n_mels, n_frames)
    assert torch.allclose(share, counts.double() / (n_mels * n_frames), rtol=0, atol=1e-15)
    # the band is exactly rows [f0, f0+f), the strip exactly frames [t0, t0+t)
    assert mask[1, 0, 3:7, 10].all() and not mask[1, 0, 2, 10] and not mask[1, 0, 7, 10]
    assert mask[2, 0, 0, 14:20].all() and not mask[2, 0, 0, 13]


@pytest.mark.parametrize("name", ["specmix", "mixup", "mixup_specmix"])
def test_mixed_targets_equal_the_pixel_weights_of_every_source(name):
    """Each source sample is a constant with a one-hot target: the output's mean pixel value must equal
    the target-weighted sum of the source values (pixels and targets mixed with the same weights)."""
    x, y, values = _constant_batch()
    x_new, y_new = apply_augment(get_augment(name, seed=3), x, y)
    assert torch.allclose(x_new.mean(dim=(2, 3)), y_new @ values, atol=1e-12)
    assert torch.allclose(y_new.sum(1), torch.ones(len(y), dtype=y.dtype), atol=1e-12)
    assert not torch.equal(y_new, y)


def test_specmix_output_pixels_come_from_self_or_partner_only():
    x, y, values = _constant_batch(batch=8)
    x_new, y_new = apply_augment(SpecMix(seed=5), x, y)
    for i in range(len(x)):
        sources = torch.nonzero(y_new[i]).flatten()
        assert 1 <= len(sources) <= 2 and i in sources.tolist()
        allowed = values[sources, 0]
        assert torch.isin(x_new[i, 0].flatten(), allowed).all()
        # partner share of pixels == partner target weight
        if len(sources) == 2:
            partner = [s for s in sources.tolist() if s != i][0]
            share = (x_new[i, 0] == values[partner, 0]).double().mean()
            assert abs(share.item() - y_new[i, partner].item()) < 1e-12


def test_mixup_specmix_uses_up_to_four_sources():
    x, y, _ = _constant_batch(batch=32)
    counts = []
    for seed in range(5):
        _, y_new = apply_augment(get_augment("mixup_specmix", seed=seed), x, y)
        counts += (y_new > 0).sum(1).tolist()
    assert max(counts) <= 4 and 4 in counts


def test_ormixup_targets_are_union_and_weights_in_range():
    x, y, values = _constant_batch(batch=16)
    x_new, y_new = apply_augment(get_augment("ormixup", p=1.0, seed=0), x, y)
    for i in range(len(x)):
        sources = torch.nonzero(y_new[i]).flatten()
        assert (y_new[i, sources] == 1).all()
        if len(sources) == 2:
            partner = [s for s in sources.tolist() if s != i][0]
            w = (x_new[i, 0, 0, 0] - values[partner, 0]) / (values[i, 0] - values[partner, 0])
            assert 0.4 - 1e-9 <= w.item() <= 0.6 + 1e-9
    x_same, y_same = apply_augment(get_augment("ormixup", p=0.0, seed=0), x, y)
    assert torch.equal(x_same, x) and torch.equal(y_same, y)


def test_ormixup_mixes_only_the_chosen_rows_and_leaves_the_input_alone():
    """p 0.5: the chosen rows are w x + (1 - w) x_partner, every other row is its clip unchanged (bit for bit),
    and the caller's batch is not written."""
    x, y, values = _constant_batch(batch=16)
    before = x.clone()
    x_new, y_new = apply_augment(get_augment("ormixup", p=0.5, seed=3), x, y)
    assert torch.equal(x, before)
    mixed = [i for i in range(len(x)) if not torch.equal(x_new[i], x[i])]
    unchanged = [i for i in range(len(x)) if torch.equal(x_new[i], x[i]) and torch.equal(y_new[i], y[i])]
    assert mixed and unchanged and len(mixed) + len(unchanged) == len(x)
    for i in mixed:
        assert (y_new[i] > 0).sum() == 2  # a mixed row carries both labels


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_specaugment_masks_within_limits_and_filled(fill):
    x = torch.randn(16, 1, 40, 50) + 3.0
    y = torch.rand(16, 4)
    x_new, y_new = apply_augment(get_augment("specaugment", fill=fill, seed=2), x, y)
    assert torch.equal(y_new, y)
    value = torch.zeros(16, 1, 1, 1) if fill == "zero" else x.mean(dim=(2, 3), keepdim=True)
    masked = x_new == value.expand_as(x)
    rows = masked.all(dim=3).sum(dim=(1, 2))           # fully masked mel rows
    cols = masked.all(dim=2).sum(dim=(1, 2))           # fully masked frames
    assert (rows <= 2 * int(0.15 * 40)).all() and (cols <= 2 * int(0.3 * 50)).all()
    assert rows.sum() > 0 and cols.sum() > 0
    assert torch.equal(x_new[~masked], x[~masked])


def test_zoomcrop_zooms_some_samples_and_keeps_range():
    x = torch.rand(32, 1, 24, 24)
    x_new, _ = apply_augment(get_augment("zoomcrop", seed=0), x, torch.rand(32, 3))
    changed = (x_new != x).flatten(1).any(1)
    assert 16 <= changed.sum() < 32                     # p = 0.75 of 32 samples
    assert x_new.min() >= x.min() - 1e-6 and x_new.max() <= x.max() + 1e-6
    x_off, _ = apply_augment(get_augment("zoomcrop", p=0.0, seed=0), x, torch.rand(32, 3))
    assert torch.equal(x_off, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(n for n in AUGMENTS if not getattr(AUGMENTS[n], "needs_waves", False)))
def test_every_augment_keeps_shape_dtype_device_and_target_range(name, device):
    x, y = _batch()
    for dtype in (torch.float32, torch.float16):
        xd, yd = x.to(device, dtype), y.to(device)
        x_new, y_new = apply_augment(get_augment(name, seed=0), xd, yd)
        assert x_new.shape == xd.shape and x_new.dtype == dtype and x_new.device == xd.device
        assert y_new.shape == yd.shape and y_new.dtype == yd.dtype
        assert y_new.min() >= 0 and y_new.max() <= 1 and torch.isfinite(x_new.float()).all()


@pytest.mark.parametrize("name", sorted(n for n in AUGMENTS if not getattr(AUGMENTS[n], "needs_waves", False)))
def test_every_augment_is_reproducible_under_a_seed_and_skips_validation(name):
    x, y = _batch(soft=False)
    a = apply_augment(get_augment(name, seed=11), x, y)
    b = apply_augment(get_augment(name, seed=11), x, y)
    c = apply_augment(get_augment(name, seed=12), x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], x)
    v = apply_augment(get_augment(name, seed=11), x, y, training=False)
    assert v[0] is x and v[1] is y


def test_seed_none_follows_torch_manual_seed():
    x, y = _batch()
    torch.manual_seed(0)
    a = apply_augment(get_augment("specmix"), x, y)
    torch.manual_seed(0)
    b = apply_augment(get_augment("specmix"), x, y)
    assert torch.equal(a[0], b[0])


def test_bad_input_and_names_raise_helpful_errors():
    with pytest.raises(DataError, match="unknown augmentation 'cutout'"):
        get_augment("cutout")
    with pytest.raises(DataError, match="n_mels, frames"):
        apply_augment(SpecMix(seed=0), torch.randn(4, 16, 20), torch.rand(4, 3))
    with pytest.raises(DataError, match="class indices"):
        apply_augment(SpecMix(seed=0), torch.randn(4, 1, 16, 20), torch.randint(0, 3, (4,)))
    with pytest.raises(DataError, match="alpha"):
        get_augment("mixup", alpha=0)
    with pytest.raises(DataError, match="seed"):
        make_generator("1")
    assert isinstance(get_augment("Mixup-SpecMix", seed=0), AUGMENTS["mixup_specmix"])
    cb = SpecMix(seed=0)
    cb.learn = SimpleNamespace(loss_func=SimpleNamespace(y_int=True))      # e.g. CrossEntropyLossFlat
    with pytest.raises(DataError, match="y_int"):
        cb("before_fit")


class _Record(__import__("fastai.callback.core", fromlist=["Callback"]).Callback):
    """Records the batch the model sees (runs after the augmentation callbacks)."""

    order = 50

    def __init__(self):
        super().__init__()
        self.seen = {True: [], False: []}

    def before_batch(self):
        self.seen[self.learn.training].append((self.learn.xb[0].clone(), self.learn.yb[0].clone()))


def test_specmix_changes_training_batches_only_in_a_real_learner():
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner

    x, y = _batch(batch=16, soft=False)
    items = list(zip(x, y))
    dls = DataLoaders(DataLoader(items, bs=8, shuffle=False), DataLoader(items, bs=8, shuffle=False))
    record = _Record()
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(2 * 16 * 20, 5)),
                    loss_func=nn.BCEWithLogitsLoss(), cbs=[SpecMix(seed=0), record])
    with learn.no_logging():
        learn.fit(1, lr=1e-3)
    valid_x = torch.cat([b[0] for b in record.seen[False]])
    valid_y = torch.cat([b[1] for b in record.seen[False]])
    assert torch.equal(valid_x, x) and torch.equal(valid_y, y)
    train_x = torch.cat([b[0] for b in record.seen[True]])
    train_y = torch.cat([b[1] for b in record.seen[True]])
    assert not torch.equal(train_x, x) and not torch.equal(train_y, y)


def test_wave_ormixup_mixes_waveforms_before_the_log_mel():
    from fatlib.augment import WaveORMixup
    from fatlib.loaders import WaveToMel

    assert WaveORMixup.order < WaveToMel.order  # runs on the waveforms, before they become log-mels
    t = torch.arange(4096, dtype=torch.float32) / 4096
    x = torch.stack([torch.sin(2 * torch.pi * 50 * t), torch.sin(2 * torch.pi * 400 * t)])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cb = WaveORMixup(p=1.0, seed=1)  # a seed whose batch permutation swaps the two clips
    x2, y2 = apply_augment(cb, x, y)
    assert torch.equal(y2, torch.ones(2, 2))  # OR of the labels
    spec = torch.fft.rfft(x2[0]).abs()
    assert spec[50] > 0.3 * spec.max() and spec[400] > 0.3 * spec.max()  # both sounds are in the mix
    with pytest.raises(DataError, match="wave_augment"):
        apply_augment(cb, torch.zeros(2, 1, 8, 8), y)


def test_freqshift_moves_whole_mel_rows_and_repeats_the_edge():
    from fatlib.augment import freq_shift

    n_mels = 40
    x = torch.arange(n_mels, dtype=torch.float32).view(1, 1, n_mels, 1).repeat(64, 3, 1, 5)
    out = freq_shift(x, generator=torch.Generator().manual_seed(0), max_shift=0.1, p=0.5)
    shifts = n_mels // 2 - out[:, 0, n_mels // 2, 0]  # row r now holds row r - shift
    assert shifts.abs().max() <= 4 and (shifts == 0).any() and (shifts > 0).any() and (shifts < 0).any()
    for b in range(64):
        s = int(shifts[b])
        want = (torch.arange(n_mels) - s).clamp(0, n_mels - 1).float()
        assert torch.equal(out[b, :, :, :], want.view(1, n_mels, 1).expand(3, n_mels, 5))
    assert torch.equal(freq_shift(x, generator=torch.Generator(), max_shift=0.1, p=0.0), x)
