"""Audio in: decode any file soundfile reads to float32 mono at one sample rate, trim, fix the length.

Every clip that enters fatlib goes through :func:`load_audio`, so a broken file is caught here, with
its name, instead of turning into silence or NaNs further down.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import AudioError

MIN_LENGTH_MODES = ("pad", "repeat")
# Integrity rule: a clip whose samples cannot be what the file says is an error (AudioError naming the file),
# never a warning: a WAV shorter than its header says (a partial copy), samples that are NaN/inf, or
# samples beyond MAX_ABS_SAMPLE (60 dB above full scale: float files written without normalising, which
# make infinite or absurd log-mels). Loud float files up to that bound are read as they are.
MAX_ABS_SAMPLE = 1e3
# a header's sample rate outside this range is damaged or absurd (1 Hz would be resampled 44,100-fold)
SAMPLE_RATE_RANGE = (1000, 768_000)


def check_rate(path, file_rate: int, *, sample_rate: int) -> None:
    """AudioError when the header's sample rate is outside :data:`SAMPLE_RATE_RANGE` (a damaged header)."""
    if not SAMPLE_RATE_RANGE[0] <= file_rate <= SAMPLE_RATE_RANGE[1]:
        raise AudioError(f"{path}: its header says {file_rate} Hz, outside {SAMPLE_RATE_RANGE[0]:,}..{SAMPLE_RATE_RANGE[1]:,} "
                         f"Hz (a damaged header?); re-export it at its real rate (e.g. `ffmpeg -i in -ar {sample_rate} "
                         "out.wav`) or drop it from the split")


def check_samples(path, data: np.ndarray) -> None:
    """AudioError when decoded samples (all of a clip, or one block of it) are NaN/inf or beyond
    :data:`MAX_ABS_SAMPLE`: the integrity rule, the same for whole clips and streamed ones."""
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(
            f"{path}: {bad} samples are NaN or infinite; re-export the clip from its source "
            "or drop it from the split (fatlib never replaces them with silence)"
        )
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            f"{path}: samples up to {peak:.3g}, beyond {MAX_ABS_SAMPLE:g} (audio samples belong in [-1, 1]); its "
            "features would be infinite or meaningless. Re-export the clip normalised to [-1, 1] or drop it from "
            "the split"
        )


def load_audio(path: str | os.PathLike, *, sample_rate: int = 44100) -> np.ndarray:
    """Read ``path`` as a float32 1-D waveform at ``sample_rate`` Hz.

    Any format and sample rate soundfile reads is accepted: several channels are averaged (downmix),
    another rate is converted with ``librosa.resample``. Samples are in [-1, 1] for PCM files.

    Raises:
        AudioError: the file is missing or unreadable, has 0 samples, or holds NaN/inf samples.
    """
    import soundfile as sf

    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file; check the path and the data directory")
    check_complete(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{path}: cannot decode audio ({e}); re-encode it as WAV/FLAC "
            f"(e.g. `ffmpeg -i in -ar {sample_rate} out.wav`) or remove it from the split"
        ) from e
    check_rate(path, file_rate, sample_rate=sample_rate)
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds 0 samples; replace it with the real recording or drop it")
    check_samples(path, data)
    y = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if file_rate != sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=file_rate, target_sr=sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32)


def wav_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose data chunk holds fewer bytes than its header says: (bytes the header
    says, bytes present); None for a complete WAV, a streamed one (size 0 or 0xFFFFFFFF) or another format."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                present = size - pos - 8
                return (n, present) if n not in (0, 0xFFFFFFFF) and present < n else None
            pos += 8 + n + (n & 1)
    return None


def check_complete(path: str | os.PathLike) -> None:
    """AudioError when ``path`` is a WAV shorter than its header says (soundfile would read the part that is
    there, silently: a half clip)."""
    short = wav_shortfall(path)
    if short is not None:
        said, present = short
        raise AudioError(f"{path}: truncated: its header says {said} bytes of samples, the file holds {present} "
                         f"({100 * present / said:.0f}%; an interrupted copy or download?); copy the complete file "
                         "again, or drop it from the split")


def _check_wave(y, what: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise AudioError(f"{what} must be a 1-D waveform, got shape {y.shape}; downmix with load_audio first")
    if y.size == 0:
        raise AudioError(f"{what} is empty (0 samples); check the clip it came from")
    return y


def trim_silence(y: np.ndarray, *, top_db: float = 60.0) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` dB below the clip's peak (librosa.effects.trim).

    A clip that is silent all through (nothing to keep) is returned untrimmed rather than empty, so
    that every clip still yields a spectrogram; the result is never empty.
    """
    y = _check_wave(y)
    if not top_db > 0:
        raise AudioError(f"top_db must be > 0 dB, got {top_db!r}")
    if not np.any(y):
        return y  # all zeros: librosa would return it as is anyway; keep the clip
    start, end = _nonsilent_bounds(y, top_db=float(top_db))
    trimmed = y[start:end]
    return trimmed if trimmed.size else y


TRIM_FRAME_SAMPLES, TRIM_HOP_SAMPLES = 2048, 512  # librosa.effects.trim's defaults
TRIM_FRAMES_PER_PASS = 4096  # RMS frames computed at a time (about 32 MB of float32 temporaries)


def _nonsilent_bounds(y: np.ndarray, *, top_db: float) -> tuple[int, int]:
    """The (start, end) samples ``librosa.effects.trim(y, top_db=top_db)`` keeps, with its RMS frames
    computed ``TRIM_FRAMES_PER_PASS`` at a time: the same numbers, but a 10-minute clip needs tens of MB
    instead of the ~0.8 GB librosa's framed copy of the whole clip takes."""
    import librosa

    frame, hop = TRIM_FRAME_SAMPLES, TRIM_HOP_SAMPLES
    padded = np.pad(y, (frame // 2, frame // 2))  # rms(center=True, pad_mode="constant")
    n_frames = 1 + (len(padded) - frame) // hop
    rms = np.concatenate([
        librosa.feature.rms(y=padded[a * hop : (min(a + TRIM_FRAMES_PER_PASS, n_frames) - 1) * hop + frame],
                            frame_length=frame, hop_length=hop, center=False)[0]
        for a in range(0, n_frames, TRIM_FRAMES_PER_PASS)
    ])
    nonzero = np.flatnonzero(librosa.amplitude_to_db(rms, ref=np.max, top_db=None) > -top_db)
    if nonzero.size == 0:
        return 0, 0
    return int(nonzero[0]) * hop, min(len(y), (int(nonzero[-1]) + 1) * hop)


def fix_length(y: np.ndarray, *, min_samples: int, mode: str = "pad") -> np.ndarray:
    """Make ``y`` at least ``min_samples`` samples long; longer clips are returned unchanged.

    ``mode="pad"`` adds zeros on both sides (centred, the extra sample on the right);
    ``mode="repeat"`` tiles the clip end to end and cuts the tiling at ``min_samples``.
    """
    y = _check_wave(y)
    if not isinstance(min_samples, (int, np.integer)) or min_samples < 1:
        raise AudioError(f"min_samples must be a positive integer (samples), got {min_samples!r}")
    if mode not in MIN_LENGTH_MODES:
        raise AudioError(f"mode must be one of {MIN_LENGTH_MODES}, got {mode!r}")
    n = y.shape[0]
    if n >= min_samples:
        return y
    if mode == "pad":
        left = (min_samples - n) // 2
        return np.pad(y, (left, min_samples - n - left))
    reps = -(-min_samples // n)
    return np.tile(y, reps)[:min_samples]
