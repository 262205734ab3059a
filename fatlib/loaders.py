"""Torch datasets for training and out-of-fold prediction, and the fastai DataLoaders built on them.

Two feature paths:

- cache (default, fast): ``CropDataset`` reads random ``cfg.crop_frames`` crops of the memory-mapped
  log-mels in a ``FeatureCache``. In the DataLoaders of :func:`build_dataloaders` (``device_input``)
  the crops travel as they are stored: float16, one channel, with their whole clip's (mean, std), in
  pinned memory and non-blocking copies on CUDA (``DeviceLoader``); the ``CacheToInput`` callback
  makes the normalised float32 model input (``features.to_model_input``) on the batch's device before
  any spectrogram augmentation runs. ``CropDataset(device_input=False)`` (its default) returns the model
  input per item on the CPU instead: the older path, 6x the bytes for 3 channels.
- on the fly (:mod:`fatlib.wave_loaders`, re-exported here): ``WaveDataset`` returns fixed-length waveform crops (``load_audio``); the ``WaveToMel``
  callback turns each batch into normalised log-mels with ``logmel.LogMel`` on the batch's device
  (GPU or CPU) before any spectrogram augmentation runs, applying the waveform effects to the whole
  training batch there (``fatlib.wave_batch.BatchWaveEffects``; the per-clip librosa ``WaveAugment``
  in the loader is the reference, ``build_dataloaders(batched_effects=False)``).

``ChannelsLast`` trains the model and its inputs in channels-last memory format.

``CacheSubset`` is a view of some cache rows (one fold) for ``fatlib.predict.predict_clips``.
"""
from __future__ import annotations

import bisect

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import to_device
from torch.utils.data import ConcatDataset, Dataset

from .crops import check_rows, crop_offset, split_index
from .errors import DataError
from .features import MelConfig, clip_stats, to_model_input
from .wave_loaders import DECODED, WaveDataset, WaveToMel, wave_crop_samples  # noqa: F401  (the waveform path)

MODES = ("cache", "wave")


class CropDataset(Dataset):
    """Crops of ``cfg.crop_frames`` frames from ``cache`` rows ``rows``: random offset when ``train``,
    the centre otherwise. Item: (x float32 (channels, n_mels, crop_frames) normalised, y float32).
    With ``cfg.normalize == "clip"`` each crop is standardised with its whole clip's statistics
    (computed once here).

    ``device_input``: items are (x float16 (1, feature_rows, crop_frames) dB as cached, stats float32 (2,)
    the whole clip's (mean, std) (zeros unless ``cfg.normalize == "clip"``), y float32), for
    :class:`CacheToInput` to normalise on the device; the sound mix happens in dB first, as above.

    ``mix_p``: share of training items mixed as sounds (power sum of the log-mels) with 1..``mix_max``
    other clips (uniform count, distinct clips, each at -``mix_gain_db``..+``mix_gain_db``), labels joined."""

    def __init__(self, cache, rows, targets, *, cfg: MelConfig, train: bool = True, mix_p: float = 0.0,
                 mix_max: int = 1, mix_gain_db: float = 6.0, device_input: bool = False):
        self.cache, self.cfg, self.train, self.device_input = cache, cfg, train, bool(device_input)
        self.mix_p, self.mix_max, self.mix_gain_db = float(mix_p), int(mix_max), float(mix_gain_db)
        self.rows, self.targets = check_rows(rows, targets, len(cache), f"CropDataset({cache_name(cache)})")
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

    def _crop(self, i, dtype=np.float32, frames: int | None = None) -> np.ndarray:
        spec = self.cache[int(self.rows[i])]
        t = min(frames or self.cfg.crop_frames, spec.shape[1])
        off = crop_offset(spec.shape[1], t, train=self.train)
        return np.array(spec[:, off : off + t], dtype=dtype)  # a copy, never a view of the memory map

    def __getitem__(self, i):
        i, frames = split_index(i)
        x, y = self._crop(i, np.float16 if self.device_input else np.float32, frames), self.targets[i]
        stats = None if self.stats is None else self.stats[i : i + 1]
        if self.train and self.mix_p > 0 and len(self) > 1 and np.random.random() < self.mix_p:
            partners = np.random.randint(1, min(self.mix_max, len(self) - 1) + 1)
            for j in (i + 1 + np.random.choice(len(self) - 1, partners, replace=False)) % len(self):
                gain = np.random.uniform(-self.mix_gain_db, self.mix_gain_db)  # other clips, mixed as sounds
                other = self._crop(j, frames=x.shape[1])
                t = min(x.shape[1], other.shape[1])  # a shorter partner shortens the segment
                x = x[:, :t].astype(np.float32)
                x = 10 * np.log10(10 ** (x / 10) + 10 ** ((other[:, :t] + gain) / 10))  # power sum
                y = np.maximum(y, self.targets[j])
            stats = None if stats is None else np.array([clip_stats(x)], np.float32)
        y = torch.from_numpy(np.ascontiguousarray(y))
        if self.device_input:
            stats = np.zeros((1, 2), np.float32) if stats is None else stats
            return torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float16)), torch.from_numpy(stats[0]), y
        return to_model_input(x[None], self.cfg, stats=stats)[0], y


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


def cache_batch_to_input(x, stats, cfg: MelConfig) -> torch.Tensor:
    """A ``CropDataset(device_input=True)`` batch (x float16 (B, 1, feature_rows, frames), stats (B, 2))
    -> the normalised float32 model input (B, channels, n_mels, frames), on x's device."""
    if not (torch.is_tensor(x) and x.dim() == 4 and x.shape[1] == 1 and torch.is_tensor(stats) and stats.shape == (len(x), 2)):
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise DataError(f"CacheToInput: expected cache crops (batch, 1, rows, frames) and stats (batch, 2), got x {got}; "
                        "build the DataLoaders with build_dataloaders(mode='cache') (device_input)")
    return to_model_input(x[:, 0], cfg, stats=stats if cfg.normalize == "clip" else None)


class CacheToInput(Callback):
    """Turns a feature-cache batch ((x float16, stats), y) from :func:`build_dataloaders` into the
    normalised float32 model input on the batch's device (:func:`cache_batch_to_input`), before
    spectrogram augmentations and mixed precision (runs first, as ``WaveToMel``)."""

    order = -10

    def __init__(self, cfg: MelConfig):
        self.cfg = cfg

    def before_batch(self):
        with torch.no_grad():
            self.learn.xb = (cache_batch_to_input(*self.learn.xb, self.cfg),)


def input_callbacks(cfg: MelConfig, *, mode: str = "cache") -> list[Callback]:
    """The callback that makes model inputs from :func:`build_dataloaders`' batches in ``mode``."""
    return [WaveToMel(cfg) if mode == "wave" else CacheToInput(cfg)]


class ChannelsLast(Callback):
    """Model and inputs in channels-last memory format (faster convolutions on recent GPUs with mixed
    precision). Runs after the augmentations (order 0), before mixed precision (10)."""

    order = 5

    def before_fit(self):
        self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self):
        x = self.learn.xb[0]
        if torch.is_tensor(x) and x.dim() == 4:
            self.learn.xb = (x.contiguous(memory_format=torch.channels_last), *self.learn.xb[1:])


class DeviceLoader(DataLoader):
    """A fastai DataLoader whose batches go to ``device`` in its ``after_batch``: from pinned memory with
    non-blocking copies when ``device`` is CUDA, so the next batch is collated while this one copies.
    ``self.device`` stays None, so fastai's own (blocking) copy never runs; ``to(device)`` sets the target."""

    def __init__(self, dataset=None, *, device=None, **kwargs):
        kwargs.setdefault("pin_memory", _is_cuda(device))
        super().__init__(dataset, device=None, **kwargs)
        self.target = device

    def to(self, device):
        self.target = device

    def after_batch(self, b):
        if self.target is None:
            return b
        return to_device(b, self.target, non_blocking=bool(self.pin_memory) and _is_cuda(self.target))

    def new(self, *args, **kwargs):
        res = super().new(*args, **kwargs)
        res.target = self.target
        return res


class SegmentLoader(DeviceLoader):
    """Training batches of variable-length segments (``cfg.crop_frames_max``; 3rd place: 8-15 s):
    each epoch the clips are sorted by length (ties and near-ties shuffled), cut into batches of
    similar length whose order is shuffled, and each batch gets one segment length, uniform in
    [``crop_frames``, ``crop_frames_max``] frames and at most its shortest clip. Items are
    ``(index, frames)`` for :class:`CropDataset` / :class:`WaveDataset`; a batch whose items came
    back shorter (a shorter sound-mix partner) is cut to its shortest item.

    Every segment is at least ``min_frames`` long, short clips extended to it as validation and inference
    extend them (a model trained on short clips' own lengths met them padded to 8 s at validation: real-audio
    out-of-fold lwlrap 0.30 instead of 0.77, one fold of the 3rd place's first stage)."""

    def __init__(self, dataset=None, *, lengths, min_frames: int, max_frames: int, **kwargs):
        super().__init__(dataset, **kwargs)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if len(self.lengths) != len(dataset) or not 1 <= min_frames <= max_frames:
            raise DataError(f"SegmentLoader: {len(self.lengths)} lengths for {len(dataset)} items, segments "
                            f"{min_frames}-{max_frames} frames; need one length per item and 1 <= min <= max.")
        self.min_frames, self.max_frames = int(min_frames), int(max_frames)

    def get_idxs(self):
        n, bs = len(self.lengths), self.bs
        jitter = np.array([self.rng.random() for _ in range(n)]) if self.shuffle else np.zeros(n)
        order = np.lexsort((jitter, self.lengths))  # by length, ties in random order
        batches = [order[k : k + bs] for k in range(0, n, bs)]
        full = [b for b in batches if len(b) == bs]
        if self.shuffle:
            self.rng.shuffle(full)
        batches = full + [b for b in batches if len(b) < bs]  # a partial batch last (drop_last drops it)
        idxs = []
        for b in batches:
            longest = self.rng.randint(self.min_frames, self.max_frames) if self.shuffle else self.min_frames
            frames = max(self.min_frames, min(longest, int(self.lengths[b].min())))
            idxs.extend((int(i), frames) for i in b)
        return idxs

    def new(self, dataset=None, cls=None, **kwargs):
        if cls is None:  # fastai's copies (e.g. get_preds on the training set) keep the segments
            kwargs = {"lengths": self.lengths, "min_frames": self.min_frames, "max_frames": self.max_frames, **kwargs}
        return super().new(dataset, cls, **kwargs)

    def create_batch(self, b):
        shortest = min(item[0].shape[-1] for item in b)
        b = [(item[0][..., :shortest], *item[1:]) for item in b]
        return super().create_batch(b)


def clip_lengths_frames(source, rows, cfg: MelConfig) -> np.ndarray:
    """Frames of each row's clip: the cache's stored lengths, or from the audio file's header (before
    trimming, extended to the crop) for a list of paths."""
    rows = np.asarray(rows, dtype=int)
    if hasattr(source, "lengths"):
        return np.asarray(source.lengths)[rows]
    import soundfile

    out = []
    for r in rows:
        info = soundfile.info(str(source[int(r)]))
        samples = info.frames * cfg.sample_rate / max(info.samplerate, 1)
        frames = int(samples // cfg.hop_length) + 1
        out.append(max(cfg.crop_frames, frames))
    return np.asarray(out, dtype=np.int64)


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def cache_name(cache) -> str:
    return str(getattr(cache, "path", None) or getattr(cache, "name", None) or type(cache).__name__)




class Concat(ConcatDataset):
    """torch's ConcatDataset that also takes ``(index, frames)`` items (:class:`SegmentLoader`)."""

    def __getitem__(self, idx):
        i, frames = split_index(idx)
        if frames is None:
            return super().__getitem__(i)
        k = bisect.bisect_right(self.cumulative_sizes, i)
        start = self.cumulative_sizes[k - 1] if k else 0
        return self.datasets[k][(i - start, frames)]


def make_dataset(parts, *, cfg: MelConfig, mode: str = "cache", train: bool = True, augment=None,
                 mix_p: float = 0.0, mix_max: int = 1, device_input: bool = False) -> Dataset:
    """One dataset over ``parts``: a list of (source, rows, targets); the source is a FeatureCache in
    "cache" mode, a list of audio paths in "wave" mode. ``mix_p``: sound mix share of each training
    part, ``device_input``: float16 crops to normalise on the device (cache mode, see :class:`CropDataset`)."""
    if mode not in MODES:
        raise DataError(f"feature mode {mode!r} is unknown: use one of {MODES}.")
    if not parts:
        raise DataError("make_dataset: no parts given; pass at least one (source, rows, targets).")
    if mode == "wave" and mix_p > 0:
        raise DataError(f"make_dataset: mix_p={mix_p} in wave mode; sound mix adds cached log-mels (mode 'cache'), "
                        "the waveform path has none: pass mix_p=0 (OR-mixup of waveforms: augment ormixup_wave).")
    if mode == "cache":
        dss = [CropDataset(src, rows, y, cfg=cfg, train=train, mix_p=mix_p, mix_max=mix_max, device_input=device_input)
               for src, rows, y in parts]
    else:
        dss = [WaveDataset(src, rows, y, cfg=cfg, train=train, augment=augment) for src, rows, y in parts]
    return dss[0] if len(dss) == 1 else Concat(dss)


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
    mix_max: int = 1,
    device_input: bool = True,
    batched_effects: bool = True,
) -> DataLoaders:
    """fastai DataLoaders for (train, valid) parts (see ``make_dataset``); add
    ``input_callbacks(cfg, mode=mode)`` to the Learner's callbacks: ``WaveToMel`` in "wave" mode,
    ``CacheToInput`` in "cache" mode, where batches are ((x float16 (B, 1, rows, frames), stats (B, 2)),
    y) and become model inputs on the device. ``device_input=False``: the older path, each cache item
    made into the float32 model input on the CPU (batches (x, y); no callback needed). Batches reach
    ``device`` through :class:`DeviceLoader` (pinned, non-blocking on CUDA). The last partial training
    batch is dropped when there is more than one batch (BatchNorm needs more than one sample).
    ``cfg.crop_frames_max``: training batches of variable-length segments (:class:`SegmentLoader`).
    ``augment`` (wave mode): a ``WaveAugment`` runs as ``fatlib.wave_batch.BatchWaveEffects`` on the
    training batches on the device (``batched_effects=False``: per clip, with librosa, in the loader)."""
    if batch_size < 1 or n_workers < 0:
        raise DataError(f"batch_size={batch_size}, n_workers={n_workers}: need batch_size >= 1, n_workers >= 0.")
    effects = None
    if mode == "wave" and augment is not None and batched_effects and not getattr(augment, "batched", False):
        from .wave_batch import BatchWaveEffects

        augment = BatchWaveEffects.from_augment(augment)  # the same draws, on the batch, on the device
    if getattr(augment, "batched", False):
        effects = augment
    train_ds = make_dataset(train_parts, cfg=cfg, mode=mode, train=True, augment=augment, mix_p=mix_p, mix_max=mix_max,
                            device_input=device_input)
    valid_ds = make_dataset(valid_parts, cfg=cfg, mode=mode, train=False, device_input=device_input)
    if len(train_ds) < 2:
        raise DataError(f"only {len(train_ds)} training clips: a fold needs at least 2 (lower n_folds).")
    kw = dict(bs=batch_size, num_workers=n_workers, device=device, persistent_workers=n_workers > 0)
    if cfg.crop_frames_max is not None:
        lengths = np.concatenate([clip_lengths_frames(src, rows, cfg) for src, rows, _ in train_parts])
        train_dl = SegmentLoader(train_ds, lengths=lengths, min_frames=cfg.crop_frames,
                                 max_frames=cfg.crop_frames_max, shuffle=True,
                                 drop_last=len(train_ds) > batch_size, **kw)
    else:
        train_dl = DeviceLoader(train_ds, shuffle=True, drop_last=len(train_ds) > batch_size, **kw)
    train_dl.batch_effects = effects  # WaveToMel applies them to training batches
    valid_dl = DeviceLoader(valid_ds, shuffle=False, drop_last=False, **kw)
    return DataLoaders(train_dl, valid_dl, device=device)
