"""Where inference gets each clip's log-mel: computed from audio files (:class:`WaveSource`) or read
from a feature cache (:class:`CacheSource`). Both report each clip's frames (``frames()``, for
length bucketing) and yield given groups of clips as (indices, log-mels) (``batches(groups)``)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .errors import AudioError, DataError
from .features import MelConfig, clip_wave


def audio_seconds(path: Path) -> float:
    """Duration of an audio file from its header; AudioError naming the file when it cannot be read."""
    import soundfile as sf

    if not path.is_file():
        raise AudioError(f"{path}: no such audio file; check the path and the data directory")
    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read the audio header ({e}); re-encode it as WAV or drop it") from e


class WaveSource:
    """Log-mels computed with :class:`fatlib.features.LogMel` on ``device``, a batch of clips at a time
    (see :meth:`batches`); waveforms are decoded by ``num_workers`` threads, one batch ahead of the model.
    A clip longer than ``frames_per_pass`` frames is computed alone, that many STFT frames at a time."""

    def __init__(self, paths: Sequence, cfg: MelConfig, device: torch.device, num_workers: int, *,
                 frames_per_pass: int | None = None):
        from .features import LogMel

        self.paths = [Path(p) for p in paths]
        self.cfg = cfg
        self.device = device
        self.mel = LogMel(cfg).to(device)
        self.num_workers = num_workers
        self.frames_per_pass = frames_per_pass or 64 * cfg.crop_frames

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self) -> np.ndarray:
        """Frames of each clip's log-mel, from the file headers (before trimming: an upper bound);
        AudioError naming the first file that cannot be read, before any work."""
        samples = np.array([round(audio_seconds(p) * self.cfg.sample_rate) for p in self.paths], dtype=np.int64)
        return 1 + np.maximum(samples, self.cfg.crop_samples) // self.cfg.hop_length

    def batches(self, groups: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        """(clip indices, their (n_mels, frames) dB log-mels) for each group of clip indices in turn;
        a group's waveforms are zero-padded to its longest (group clips of similar length)."""
        groups = list(groups)
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            pending = [pool.submit(clip_wave, self.paths[i], self.cfg) for i in groups[0]] if groups else []
            for k, idx in enumerate(groups):
                waves = [f.result() for f in pending]
                if k + 1 < len(groups):
                    pending = [pool.submit(clip_wave, self.paths[i], self.cfg) for i in groups[k + 1]]
                yield idx, self._log_mels(waves)
                del waves

    def _log_mels(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        hop = self.cfg.hop_length
        if len(waves) == 1 and 1 + len(waves[0]) // hop > self.frames_per_pass:
            wave = torch.from_numpy(waves[0]).to(self.device)
            return [self.mel.long_clip(wave, frames_per_pass=self.frames_per_pass)]
        # zero-padding the end changes no frame of a shorter clip (the STFT pads with zeros too)
        longest = max(len(w) for w in waves)
        batch = torch.zeros(len(waves), longest)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = torch.from_numpy(w)
        specs = self.mel(batch.to(self.device))
        return [specs[i, :, : 1 + len(w) // hop] for i, w in enumerate(waves)]


class CacheSource:
    """Log-mels read from a :class:`fatlib.cache.FeatureCache` built with the same MelConfig."""

    def __init__(self, cache, cfg: MelConfig, device: torch.device):
        if cache.cfg.to_dict() != cfg.to_dict():
            diff = {k: (v, cfg.to_dict()[k]) for k, v in cache.cfg.to_dict().items() if cfg.to_dict()[k] != v}
            raise DataError(
                f"feature cache {getattr(cache, 'index_path', '')} was built with other settings (cache, models): {diff}. "
                "Rebuild the cache with the models' MelConfig or predict from the audio files."
            )
        self.cache = cache
        self.device = device

    def __len__(self) -> int:
        return len(self.cache)

    def frames(self) -> np.ndarray:
        return np.asarray(self.cache.lengths, dtype=np.int64)

    def batches(self, groups: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        for idx in groups:
            yield idx, [torch.from_numpy(np.asarray(self.cache[j], dtype=np.float32)).to(self.device) for j in idx]


def make_source(paths_or_cache, cfg: MelConfig, device: torch.device, num_workers: int | None, *,
                frames_per_pass: int | None = None):
    """A CacheSource for a FeatureCache (anything with ``lengths`` and ``cfg``), else a WaveSource
    over the given audio paths (``num_workers`` decoding threads, default up to 4)."""
    if not isinstance(cfg, MelConfig):
        raise DataError(f"cfg must be a fatlib.features.MelConfig, got {type(cfg).__name__}.")
    if hasattr(paths_or_cache, "lengths") and hasattr(paths_or_cache, "cfg"):
        return CacheSource(paths_or_cache, cfg, device)
    if isinstance(paths_or_cache, (str, os.PathLike)):
        raise DataError(f"{paths_or_cache}: give a list of audio paths or a FeatureCache, not a single path.")
    workers = num_workers or min(4, os.cpu_count() or 1)
    return WaveSource(list(paths_or_cache), cfg, device, workers, frames_per_pass=frames_per_pass)
