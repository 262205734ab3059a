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


STFT_FRAMES_PER_PASS = 1024  # a long clip's STFT frames at a time (~35 MB of temporaries at n_fft 2560)


class WaveSource:
    """Log-mels computed with :class:`fatlib.logmel.LogMel` on ``device``, a group of clips at a time
    (see :meth:`batches`); waveforms are decoded by ``num_workers`` threads, one group ahead of the
    model. A clip longer than ``frames_per_pass`` frames is computed alone, decoded in blocks and its STFT
    in parts (:func:`fatlib.streaming.stream_log_mel`: its waveform is never held whole)."""

    def __init__(self, paths: Sequence, cfg: MelConfig, device: torch.device, num_workers: int, *,
                 frames_per_pass: int | None = None):
        from .logmel import LogMel

        self.paths = [Path(p) for p in paths]
        self.cfg = cfg
        self.device = device
        self.mel = LogMel(cfg).to(device)
        self.num_workers = num_workers
        self.frames_per_pass = frames_per_pass or 32 * cfg.crop_frames
        self._frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self) -> np.ndarray:
        """Frames of each clip's log-mel, from the file headers (before trimming: an upper bound);
        AudioError naming the first file that cannot be read, before any work."""
        if self._frames is None:
            seconds = np.array([audio_seconds(p) for p in self.paths], dtype=np.float64)
            samples = np.maximum(np.round(seconds * self.cfg.sample_rate).astype(np.int64), self.cfg.crop_samples)
            self._frames = 1 + samples // self.cfg.hop_length
        return self._frames

    def batches(self, groups: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        """(clip indices, their (n_mels, frames) dB log-mels) for each group of clip indices in turn;
        a group's waveforms are zero-padded to its longest (group clips of similar length). A clip over
        ``frames_per_pass`` is streamed only when its turn comes, not while the model runs."""
        groups = list(groups)
        frames = self.frames()

        def streamed(idx) -> bool:  # a clip longer than one pass: alone, decoded in blocks (fatlib.streaming)
            return frames[idx].max() > self.frames_per_pass

        def submit(pool, idx):
            return [] if streamed(idx) else [pool.submit(clip_wave, self.paths[i], self.cfg) for i in idx]

        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            pending = submit(pool, groups[0]) if groups else []
            for k, idx in enumerate(groups):
                if streamed(idx):
                    specs = [self._streamed(self.paths[i]) for i in idx]
                else:
                    waves = [f.result() for f in (pending or submit(pool, idx))]
                    specs = self._log_mels(waves)
                    del waves
                pending = submit(pool, groups[k + 1]) if k + 1 < len(groups) else []
                yield idx, specs

    def _streamed(self, path: Path) -> torch.Tensor:
        from .streaming import stream_log_mel

        return stream_log_mel(path, self.cfg, self.mel, run_frames=min(self.frames_per_pass, STFT_FRAMES_PER_PASS))[0]

    def _log_mels(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        hop = self.cfg.hop_length
        if len(waves) == 1 and 1 + len(waves[0]) // hop > self.frames_per_pass:
            wave = torch.from_numpy(waves[0]).to(self.device)
            return [self.mel.long_clip(wave, frames_per_pass=min(self.frames_per_pass, STFT_FRAMES_PER_PASS))]
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
