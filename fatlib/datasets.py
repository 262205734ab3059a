"""Torch datasets for training and out-of-fold prediction, and the fastai DataLoaders built on them.

Two feature paths:

- cache (default, fast): ``CropDataset`` reads random ``cfg.crop_frames`` crops of the memory-mapped
  log-mels in a ``FeatureCache`` and normalises them (``features.to_model_input``).
- on the fly: ``WaveDataset`` returns fixed-length waveform crops (``load_audio`` + optional
  ``WaveAugment``); the ``WaveToMel`` callback turns each batch into normalised log-mels with
  ``features.LogMel`` on the batch's device (GPU or CPU) before any spectrogram augmentation runs.

``CacheSubset`` is a view of some cache rows (one fold) for ``fatlib.predict.predict_clips``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from torch.utils.data import ConcatDataset, Dataset

from .errors import DataError
from .features import LogMel, MelConfig, clip_stats, clip_wave, to_model_input

MODES = ("cache", "wave")


def _check_rows(rows, targets, n_total: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(rows, dtype=int).reshape(-1)
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2 or len(targets) != len(rows):
        raise DataError(
            f"{what}: targets must be (n_rows, n_classes) with one row per index, got {targets.shape} "
            f"for {len(rows)} indices."
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= n_total):
        raise DataError(f"{what}: indices must lie in [0, {n_total}), got {rows.min()}..{rows.max()}.")
    return rows, targets


def crop_offset(length: int, crop: int, *, train: bool) -> int:
    """Start of a ``crop``-long window in ``length``: uniform random when training, else the centre."""
    if train:
        return int(np.random.randint(0, length - crop + 1))
    return (length - crop) // 2


class CropDataset(Dataset):
    """Crops of ``cfg.crop_frames`` frames from ``cache`` rows ``rows``: random offset when ``train``,
    the centre otherwise. Item: (x float32 (channels, n_mels, crop_frames) normalised, y float32).
    With ``cfg.normalize == "clip"`` each crop is standardised with its whole clip's statistics
    (computed once here)."""

    def __init__(self, cache, rows, targets, *, cfg: MelConfig, train: bool = True, mix_p: float = 0.0,
                 mix_gain_db: float = 6.0):
        self.cache, self.cfg, self.train = cache, cfg, train
        self.mix_p, self.mix_gain_db = float(mix_p), float(mix_gain_db)
        self.rows, self.targets = _check_rows(rows, targets, len(cache), f"CropDataset({cache_name(cache)})")
        lengths = np.asarray(cache.lengths)[self.rows]
        short = np.flatnonzero(lengths < cfg.crop_frames)
        if len(short):
            raise DataError(
                f"CropDataset({cache_name(cache)}): {len(short)} clips have fewer than crop_frames="
                f"{cfg.crop_frames} frames (e.g. {cache.fnames[self.rows[short[0]]]}: {lengths[short[0]]}). "
                "Build the cache with the same MelConfig as training (it pads clips to the crop)."
            )
        self.stats = (np.array([clip_stats(cache[int(r)]) for r in self.rows], np.float32).reshape(-1, 2)
                      if cfg.normalize == "clip" else None)

    def __len__(self) -> int:
        return len(self.rows)

    def _crop(self, i) -> np.ndarray:
        spec = self.cache[int(self.rows[i])]
        t = self.cfg.crop_frames
        off = crop_offset(spec.shape[1], t, train=self.train)
        return np.asarray(spec[:, off : off + t], dtype=np.float32)

    def __getitem__(self, i):
        x, y = self._crop(i), self.targets[i]
        stats = None if self.stats is None else self.stats[i : i + 1]
        if self.train and self.mix_p > 0 and len(self) > 1 and np.random.random() < self.mix_p:
            j = (i + np.random.randint(1, len(self))) % len(self)  # another clip, mixed as sounds (power sum)
            gain = np.random.uniform(-self.mix_gain_db, self.mix_gain_db)
            x = 10 * np.log10(10 ** (x / 10) + 10 ** ((self._crop(j) + gain) / 10))
            y = np.maximum(y, self.targets[j])
            stats = None if stats is None else np.array([clip_stats(x)], np.float32)
        x = to_model_input(x[None], self.cfg, stats=stats)[0]
        return x, torch.from_numpy(np.ascontiguousarray(y))


class CacheSubset:
    """A read-only view of some rows of a FeatureCache (same ``cfg``, ``fnames``, ``lengths``, items),
    e.g. to predict one fold with ``fatlib.predict.predict_clips``."""

    def __init__(self, cache, rows):
        self.cache, self.rows = cache, np.asarray(rows, dtype=int)
        self.cfg = cache.cfg
        self.fnames = [cache.fnames[i] for i in self.rows]
        self.lengths = np.asarray(cache.lengths)[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.cache[int(self.rows[i])]


def wave_crop_samples(cfg: MelConfig) -> int:
    """Waveform crop length (samples) whose centred STFT has exactly ``cfg.crop_frames`` frames."""
    return (cfg.crop_frames - 1) * cfg.hop_length


class WaveDataset(Dataset):
    """Fixed-length waveform crops (``wave_crop_samples(cfg)`` samples) of audio files, loaded on the fly.

    Each clip is loaded (``cfg.sample_rate`` Hz), silence-trimmed (``cfg.trim_top_db``), extended to the
    crop (``cfg.min_length``), cropped (random when ``train``, else centred) and, when training with
    ``augment`` (a ``WaveAugment``), augmented. Item: (wave float32 (samples,), y float32).
    """

    def __init__(self, paths: Sequence[Path], rows, targets, *, cfg: MelConfig, train: bool = True, augment=None):
        self.paths = [Path(p) for p in paths]
        self.rows, self.targets = _check_rows(rows, targets, len(self.paths), "WaveDataset")
        self.cfg, self.train, self.augment = cfg, train, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        from .audio import fix_length

        cfg, n = self.cfg, wave_crop_samples(self.cfg)
        augment = self.augment if self.train else None
        margin = int(n * 1.25) if augment is not None else n  # room for speed changes
        y = clip_wave(self.paths[int(self.rows[i])], cfg, min_samples=margin)
        off = crop_offset(len(y), margin, train=self.train)
        y = y[off : off + margin]
        if augment is not None:
            y = fix_length(np.asarray(augment(y), dtype=np.float32), min_samples=n, mode=cfg.min_length)
            y = y[crop_offset(len(y), n, train=True) :][:n]
        return torch.from_numpy(np.ascontiguousarray(y[:n], dtype=np.float32)), torch.from_numpy(self.targets[i])


class WaveToMel(Callback):
    """Turns a waveform batch (B, samples) into normalised log-mels (B, channels, n_mels, frames) with
    ``features.LogMel`` on the batch's device, before spectrogram augmentations (runs first)."""

    order = -10

    def __init__(self, cfg: MelConfig):
        self.cfg = cfg
        self.logmel = LogMel(cfg)

    def before_batch(self):
        x = self.learn.xb[0]
        self.logmel = self.logmel.to(x.device)
        with torch.no_grad():
            self.learn.xb = (to_model_input(self.logmel(x.float()), self.cfg),)


def cache_name(cache) -> str:
    return str(getattr(cache, "path", None) or getattr(cache, "name", None) or type(cache).__name__)




def make_dataset(parts, *, cfg: MelConfig, mode: str = "cache", train: bool = True, augment=None,
                 mix_p: float = 0.0) -> Dataset:
    """One dataset over ``parts``: a list of (source, rows, targets); the source is a FeatureCache in
    "cache" mode, a list of audio paths in "wave" mode. ``mix_p``: sound mix share of each training
    part (cache mode, see :class:`CropDataset`)."""
    if mode not in MODES:
        raise DataError(f"feature mode {mode!r} is unknown: use one of {MODES}.")
    if not parts:
        raise DataError("make_dataset: no parts given; pass at least one (source, rows, targets).")
    if mode == "cache":
        dss = [CropDataset(src, rows, y, cfg=cfg, train=train, mix_p=mix_p) for src, rows, y in parts]
    else:
        dss = [WaveDataset(src, rows, y, cfg=cfg, train=train, augment=augment) for src, rows, y in parts]
    return dss[0] if len(dss) == 1 else ConcatDataset(dss)


def build_dataloaders(
    train_parts,
    valid_parts,
    *,
    cfg: MelConfig,
    mode: str = "cache",
    batch_size: int = 64,
    n_workers: int = 0,
    augment=None,
    device=None,
    mix_p: float = 0.0,
) -> DataLoaders:
    """fastai DataLoaders for (train, valid) parts (see ``make_dataset``). In "wave" mode add
    ``WaveToMel(cfg)`` to the Learner's callbacks. The last partial training batch is dropped when
    there is more than one batch (BatchNorm needs more than one sample)."""
    if batch_size < 1 or n_workers < 0:
        raise DataError(f"batch_size={batch_size}, n_workers={n_workers}: need batch_size >= 1, n_workers >= 0.")
    train_ds = make_dataset(train_parts, cfg=cfg, mode=mode, train=True, augment=augment, mix_p=mix_p)
    valid_ds = make_dataset(valid_parts, cfg=cfg, mode=mode, train=False)
    if len(train_ds) < 2:
        raise DataError(f"only {len(train_ds)} training clips: a fold needs at least 2 (lower n_folds).")
    kw = dict(bs=batch_size, num_workers=n_workers, device=device, persistent_workers=n_workers > 0)
    train_dl = DataLoader(train_ds, shuffle=True, drop_last=len(train_ds) > batch_size, **kw)
    valid_dl = DataLoader(valid_ds, shuffle=False, drop_last=False, **kw)
    return DataLoaders(train_dl, valid_dl, device=device)
