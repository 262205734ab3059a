"""A long recording's log-mel without its whole waveform in memory: the file is decoded in blocks
(:func:`mono_blocks`: downmix, then ``soxr``'s streaming resampler, which gives the same samples as
``librosa.resample`` of the whole file) and read twice: once for the silence-trim bounds (RMS frames,
as :func:`fatlib.audio.trim_silence`), once for the STFT of the kept part, a run of frames at a time.
Memory is the log-mel itself (128 mels at hop 694: about 20 MB per 10 minutes) plus one block, where
decoding the whole file holds about 106 MB per 10 minutes of float32 samples (more while resampling or
for several channels).

:func:`stream_log_mel` gives the numbers of ``LogMel(clip_wave(path, cfg))`` (same frames, float
tolerance); :class:`fatlib.sources.WaveSource` uses it for clips longer than one feature pass, and
:meth:`fatlib.tagger.Tagger.timeline` for every file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .audio import TRIM_FRAME_SAMPLES, TRIM_HOP_SAMPLES, check_complete, check_rate, check_samples, fix_length
from .errors import AudioError
from .features import AMIN, TOP_DB, MelConfig, extend_mode
from .logmel import LogMel

BLOCK_SECONDS = 10.0  # decoded audio per block
RUN_FRAMES = 1024  # STFT frames per pass (~35 MB of temporaries at n_fft 2560)


def mono_blocks(path: str | os.PathLike, *, sample_rate: int, block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Consecutive float32 mono blocks at ``sample_rate`` Hz: :func:`fatlib.audio.load_audio`'s samples
    (channels averaged, other rates converted as ``librosa.resample`` does), ``block_seconds`` at a time
    (default :data:`BLOCK_SECONDS`).
    AudioError naming the file when it cannot be decoded, is empty or holds NaN/inf samples."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file; check the path")
    check_complete(path)  # the integrity rule of fatlib.audio.load_audio, for streamed clips too
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e}); re-encode it as WAV/FLAC "
                         f"(e.g. `ffmpeg -i in -ar {sample_rate} out.wav`) or leave it out") from e
    with f:
        if f.frames == 0:
            raise AudioError(f"{path}: the file holds 0 samples; replace it with the real recording or leave it out")
        check_rate(path, f.samplerate, sample_rate=sample_rate)
        resampler = None
        if f.samplerate != sample_rate:
            import soxr

            # librosa.resample (res_type "soxr_hq") is soxr at quality HQ, its output fixed to ceil(n * ratio)
            resampler = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
        block = max(1, int((block_seconds or BLOCK_SECONDS) * f.samplerate))
        done, read = 0, 0  # samples given out (at sample_rate), samples decoded (at the file's rate)
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"{path}: cannot decode audio after {done} samples ({e}); re-encode it") from e
            last = len(data) < block  # a short read (an empty one when the length is a multiple of block)
            check_samples(path, data)
            y = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
            read += len(y)
            if resampler is not None:
                y = resampler.resample_chunk(np.ascontiguousarray(y), last=last)
                if last:  # the length librosa gives: ceil(decoded samples * ratio), counted, not from the header
                    want = int(np.ceil(read * (float(sample_rate) / f.samplerate)))
                    y = y[: max(want - done, 0)]
                    y = np.pad(y, (0, max(want - done - len(y), 0)))
            done += len(y)
            if len(y):
                yield np.ascontiguousarray(y, dtype=np.float32)
            if last:
                return


class FrameRuns:
    """Cuts a stream of samples, zero-padded by ``pad`` samples at both ends, into runs of at most
    ``run_frames`` frames of ``frame`` samples every ``hop``: each run is the padded samples its frames
    span (consecutive runs overlap by ``frame - hop``). Frame k starts at padded sample ``k * hop``."""

    def __init__(self, *, frame: int, hop: int, pad: int, run_frames: int = RUN_FRAMES):
        self.frame, self.hop, self.run = frame, hop, max(1, run_frames)
        self.buf = np.zeros(pad, dtype=np.float32)
        self.pad = pad
        self.first = 0  # index of the first frame not emitted yet

    def push(self, y: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame, samples) of every full run the new samples complete."""
        self.buf = np.concatenate([self.buf, y])
        span = (self.run - 1) * self.hop + self.frame
        while len(self.buf) >= span:
            yield self.first, self.buf[:span]
            self.buf = self.buf[self.run * self.hop:]
            self.first += self.run

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """The remaining runs, after the closing pad."""
        self.buf = np.concatenate([self.buf, np.zeros(self.pad, dtype=np.float32)])
        while len(self.buf) >= self.frame:
            n = min(self.run, 1 + (len(self.buf) - self.frame) // self.hop)
            yield self.first, self.buf[: (n - 1) * self.hop + self.frame]
            self.buf = self.buf[n * self.hop:]
            self.first += n


def trim_bounds(path: str | os.PathLike, cfg: MelConfig) -> tuple[int, int, int]:
    """(start, end, n_samples) at ``cfg.sample_rate``: the part :func:`fatlib.audio.trim_silence` keeps
    (the whole file when ``cfg.trim_top_db`` is None, the file is all zeros or nothing is kept)."""
    import librosa

    frame, hop = TRIM_FRAME_SAMPLES, TRIM_HOP_SAMPLES
    runs = FrameRuns(frame=frame, hop=hop, pad=frame // 2)
    rms, n, nonzero = [], 0, False
    for y in mono_blocks(path, sample_rate=cfg.sample_rate):
        n += len(y)
        nonzero = nonzero or bool(np.any(y))
        if cfg.trim_top_db is not None:
            rms += [librosa.feature.rms(y=seg, frame_length=frame, hop_length=hop, center=False)[0]
                    for _, seg in runs.push(y)]
    if cfg.trim_top_db is None or not nonzero:
        return 0, n, n
    rms += [librosa.feature.rms(y=seg, frame_length=frame, hop_length=hop, center=False)[0] for _, seg in runs.finish()]
    db = librosa.amplitude_to_db(np.concatenate(rms), ref=np.max, top_db=None)
    kept = np.flatnonzero(db > -cfg.trim_top_db)
    if kept.size == 0:
        return 0, n, n
    start, end = int(kept[0]) * hop, min(n, (int(kept[-1]) + 1) * hop)
    return (start, end, n) if end > start else (0, n, n)


def _samples(path, cfg: MelConfig, start: int, end: int) -> Iterator[np.ndarray]:
    """The samples [start, end) of the decoded stream, block by block."""
    pos = 0
    for y in mono_blocks(path, sample_rate=cfg.sample_rate):
        a, b = max(start - pos, 0), min(end - pos, len(y))
        pos += len(y)
        if b > a:
            yield y[a:b]
        if pos >= end:
            return


def stream_log_mel(path: str | os.PathLike, cfg: MelConfig, mel: LogMel | None = None, *,
                   run_frames: int = RUN_FRAMES) -> tuple[torch.Tensor, int, int]:
    """(log-mel (cfg.feature_rows, frames) on ``mel``'s device, offset, n_samples): the features
    :class:`fatlib.sources.WaveSource` computes for ``path``, decoded in blocks. ``offset``: the sample
    (at ``cfg.sample_rate``) where frame 0 is centred (the trim start; negative when a short clip was
    padded at its start); ``n_samples``: the file's length at ``cfg.sample_rate``."""
    mel = LogMel(cfg) if mel is None else mel
    device = next(iter(mel.buffers())).device
    start, end, n = trim_bounds(path, cfg)
    want = cfg.min_samples
    if end - start < want:  # short: extended as clip_wave does, all in memory (a few seconds)
        y = np.concatenate(list(_samples(path, cfg, start, end)))
        mode = extend_mode(len(y), cfg)
        wave = fix_length(y, min_samples=want, mode=mode)
        offset = start - ((want - len(y)) // 2 if mode == "pad" else 0)
        return mel(torch.from_numpy(wave).to(device))[0], offset, n
    parts = list(mel.parts) if len(mel.parts) else [mel]
    hop = cfg.hop_length
    n_frames = 1 + (end - start) // hop
    out = torch.empty(len(parts), cfg.n_mels, n_frames, device=device)
    runners = [FrameRuns(frame=p.cfg.n_fft, hop=hop, pad=p.cfg.n_fft // 2, run_frames=run_frames) for p in parts]

    def fill(k, part, runs):
        for first, seg in runs:
            power = part._mel_power(torch.from_numpy(seg).to(device)[None], center=False)[0]
            out[k, :, first:first + power.shape[-1]] = power

    for y in _samples(path, cfg, start, end):
        for k, (part, runner) in enumerate(zip(parts, runners)):
            fill(k, part, runner.push(y))
    for k, (part, runner) in enumerate(zip(parts, runners)):
        fill(k, part, runner.finish())
    for k in range(len(parts)):  # LogMel._to_db in place, each STFT size on its own peak
        if cfg.log_offset is not None:
            out[k] = torch.log(out[k] + cfg.log_offset)
        else:
            db = out[k].clamp_(min=AMIN).log10_().mul_(10.0)
            db.clamp_(min=float(db.max()) - TOP_DB)
    return out.reshape(len(parts) * cfg.n_mels, n_frames), start, n
