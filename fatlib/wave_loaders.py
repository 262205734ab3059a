"""The on-the-fly waveform path of training: decoded clips kept in memory per process (:data:`DECODED`),
``WaveDataset`` (fixed-length waveform crops) and the ``WaveToMel`` callback (log-mels and the batched
waveform effects on the batch's device). :func:`fatlib.loaders.build_dataloaders` builds on them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from fastai.callback.core import Callback
from torch.utils.data import Dataset

from .crops import check_rows, crop_offset, split_index
from .errors import DataError
from .features import MelConfig, clip_wave, extend_mode, to_model_input
from .logmel import LogMel

WAVE_MEMORY_MB = 1024  # at most this many MiB of decoded clips kept per process (and 10 % of the RAM)


def wave_crop_samples(cfg: MelConfig, frames: int | None = None) -> int:
    """Waveform crop length (samples) whose centred STFT has exactly ``frames`` (``cfg.crop_frames``) frames."""
    return ((frames or cfg.crop_frames) - 1) * cfg.hop_length


def wave_memory_bytes() -> int:
    """The byte budget of :class:`DecodedWaves`: ``FATLIB_WAVE_MEMORY_MB`` (0: keep none), else the smaller
    of :data:`WAVE_MEMORY_MB` and a tenth of the machine's memory."""
    env = os.environ.get("FATLIB_WAVE_MEMORY_MB", "").strip()
    if env:
        try:
            return max(0, int(float(env) * 2**20))
        except ValueError:
            raise DataError(f"FATLIB_WAVE_MEMORY_MB={env!r}: give a number of MiB (0: no decoded clips kept)") from None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return min(WAVE_MEMORY_MB * 2**20, ram // 10)


class DecodedWaves:
    """Decoded clips (``load_audio``'s float32 output) kept in memory, first come first kept up to
    :func:`wave_memory_bytes`: while the budget lasts, each clip is decoded once per process (across epochs
    and folds) instead of once per epoch. Keyed by path, size and modification time (a rewritten file is
    decoded again); the kept arrays are read-only."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self.waves: dict = {}
        self.bytes = 0

    def load(self, path, sample_rate: int) -> np.ndarray:
        from .audio import load_audio

        try:
            st = os.stat(path)
            key = (str(path), int(sample_rate), st.st_size, st.st_mtime_ns)
        except OSError:
            return load_audio(path, sample_rate=sample_rate)  # load_audio says what is wrong
        y = self.waves.get(key)
        if y is not None:
            return y
        y = load_audio(path, sample_rate=sample_rate)
        budget = wave_memory_bytes() if self.max_bytes is None else self.max_bytes
        if self.bytes + y.nbytes <= budget:
            y.setflags(write=False)
            self.waves[key] = y
            self.bytes += y.nbytes
        return y


DECODED = DecodedWaves()  # the process's decoded clips (each DataLoader worker process has its own)


class WaveDataset(Dataset):
    """Fixed-length waveform crops (``wave_crop_samples(cfg)`` samples) of audio files, loaded on the fly.

    Each clip is loaded (``cfg.sample_rate`` Hz), silence-trimmed (``cfg.trim_top_db``), extended to the
    crop (``cfg.min_length``), cropped (random when ``train``, else centred) and, when training with
    ``augment``, augmented. Item: (wave float32 (samples,), y float32). Clips are decoded through
    :data:`DECODED` (each decoded once per process while its memory budget lasts).

    ``augment``: a per-clip ``WaveAugment`` (run here, in the loader), or a
    ``fatlib.wave_batch.BatchWaveEffects`` (``batched``): training crops are then loaded with the
    margin its fastest tempo needs (``loaded_frames``) and :class:`WaveToMel` applies the effects to
    the whole batch on the device.
    """

    def __init__(self, paths: Sequence[Path], rows, targets, *, cfg: MelConfig, train: bool = True, augment=None):
        self.paths = [Path(p) for p in paths]
        self.rows, self.targets = check_rows(rows, targets, len(self.paths), "WaveDataset")
        self.cfg, self.train, self.augment = cfg, train, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        from .audio import fix_length

        i, frames = split_index(i)
        cfg, n = self.cfg, wave_crop_samples(self.cfg, frames)
        augment = self.augment if self.train else None
        if getattr(augment, "batched", False):  # effects on the batch later: load the tempo margin only
            n = wave_crop_samples(cfg, augment.loaded_frames(frames or cfg.crop_frames))
            augment = None
        margin = int(n * 1.25) if augment is not None else n  # room for speed changes
        # clip_wave of the decoded clip (DECODED: decoded once per process while its memory budget lasts)
        y = clip_wave(DECODED.load(self.paths[int(self.rows[i])], cfg.sample_rate), cfg, min_samples=margin)
        off = crop_offset(len(y), margin, train=self.train)
        y = y[off : off + margin]
        if augment is not None:
            y = np.asarray(augment(y), dtype=np.float32)
            y = fix_length(y, min_samples=n, mode=extend_mode(len(y), cfg))
            y = y[crop_offset(len(y), n, train=True) :][:n]
        y = np.ascontiguousarray(y[:n], dtype=np.float32)
        if not y.flags.writeable:  # a view of a kept decoded clip: the item gets its own samples
            y = y.copy()
        return torch.from_numpy(y), torch.from_numpy(self.targets[i])


class WaveToMel(Callback):
    """Turns a waveform batch (B, samples) into normalised log-mels (B, channels, n_mels, frames) with
    ``logmel.LogMel`` on the batch's device, before spectrogram augmentations (runs first).

    Training batches get the batched waveform effects (``fatlib.wave_batch.BatchWaveEffects``) of
    ``effects``, or of the training DataLoader (``build_dataloaders`` puts them there as ``batch_effects``):
    a batch loaded with the tempo margin comes out at its segment's frames."""

    order = -10

    def __init__(self, cfg: MelConfig, *, effects=None):
        self.cfg, self.effects = cfg, effects
        self.logmel = LogMel(cfg)

    def _effects(self):
        if not getattr(self.learn, "training", False):
            return None
        if self.effects is not None:
            return self.effects
        dls = getattr(self.learn, "dls", None)
        return getattr(getattr(dls, "train", None), "batch_effects", None) if dls is not None else None

    def before_batch(self):
        x = self.learn.xb[0]
        self.logmel = self.logmel.to(x.device)
        effects = self._effects()
        with torch.no_grad():
            if effects is None:
                mel = self.logmel(x.float())
            else:
                frames = effects.segment_frames(1 + x.shape[-1] // self.cfg.hop_length)
                mel = effects.apply(self.logmel, x, frames=frames)
            self.learn.xb = (to_model_input(mel, self.cfg),)
