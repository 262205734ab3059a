"""Log-mel features: the configuration (:class:`MelConfig`, presets), the librosa reference
(:func:`log_mel`; the same numbers on torch for batches on CPU or GPU: :class:`fatlib.logmel.LogMel`), and the
normalisation into model input (:func:`normalize`, :func:`to_model_input`).

Values are in dB: ``power_to_db(melspectrogram(power=2), ref=1.0, amin=1e-10, top_db=80)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .audio import MIN_LENGTH_MODES, fix_length, load_audio, trim_silence
from .errors import DataError

__all__ = [
    "MelConfig", "PRESETS", "get_preset", "log_mel", "clip_wave", "clip_features", "normalize", "clip_stats",
    "to_model_input", "load_audio", "trim_silence", "fix_length",
]

AMIN = 1e-10  # power floor before log10 (librosa's amin)
TOP_DB = 80.0  # dynamic range kept below each clip's peak, dB
NORMALIZE_MODES = ("clip", "crop", "global", "none")
CONFIG_SCHEMA = 2  # MelConfig.schema: 1 (no field) = before "crop" existed, when "clip" meant per crop
EPS_STD = 1e-6  # added to the per-clip standard deviation (dB) so a constant clip does not divide by 0


@dataclass(frozen=True)
class MelConfig:
    """Everything that decides the numbers of a log-mel spectrogram and how it is fed to a model.

    Units: ``sample_rate`` Hz, ``n_fft``/``hop_length`` samples, ``fmin``/``fmax`` Hz, ``trim_top_db``
    dB below the peak (None: no trimming), ``crop_frames`` STFT frames (shorter clips are extended to
    ``crop_frames * hop_length`` samples by ``min_length`` = "pad" or "repeat"), ``global_mean`` and
    ``global_std`` dB (used when ``normalize == "global"``), ``channels`` copies for the model input.

    ``normalize``: "clip" standardises with the mean and standard deviation of the whole clip, then
    crops (the 12th-place kernel: a quiet crop of a loud clip stays quiet); "crop" standardises each
    crop on its own; "global" uses ``global_mean`` / ``global_std``; "none" feeds dB.

    Parameters of other solutions (their defaults leave every earlier config, and its cache key, as it was):
    ``n_ffts``: several STFT sizes at the same hop, one input channel each (95th place: 896, 1792, 3584);
    ``n_fft`` is then unused and ``channels`` must equal ``len(n_ffts)``; the cache stores the
    resolutions stacked along the mel axis (``feature_rows`` = ``n_mels * len(n_ffts)`` rows).
    ``log_offset``: None gives dB (power_to_db, top 80 dB); a number gives ``log(mel + log_offset)``
    (natural log of the power mel, no clamp; 3rd place: 1e-4). ``min_seconds``: clips shorter than this
    many seconds are extended (by ``min_length``) to it even where the crop is shorter (95th place:
    repeated to 3 s); None: to the crop only. ``repeat_below_seconds``: clips shorter than this many
    seconds (after trimming) are tiled instead of extended by ``min_length`` (95th place: below 1.5 s
    tiled, longer clips zero-padded); None: ``min_length`` for every clip.
    ``crop_frames_max``: training segments of variable length, a random length in
    [``crop_frames``, ``crop_frames_max``] frames per batch (at most the batch's shortest clip),
    batches of clips of similar length (3rd place: 8-15 s); None: every crop ``crop_frames`` long.
    Validation, TTA and the cache use ``crop_frames``.
    """

    sample_rate: int = 44100
    n_mels: int = 128
    n_fft: int = 2560
    hop_length: int = 694
    fmin: float = 20.0
    fmax: float = 22050.0
    trim_top_db: float | None = 60.0
    crop_frames: int = 128
    min_length: str = "pad"
    normalize: str = "clip"
    global_mean: float = -35.7
    global_std: float = 21.6
    channels: int = 3
    schema: int = CONFIG_SCHEMA
    n_ffts: tuple = ()
    log_offset: float | None = None
    min_seconds: float | None = None
    repeat_below_seconds: float | None = None
    crop_frames_max: int | None = None

    def __post_init__(self):
        for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "crop_frames", "channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DataError(f"MelConfig.{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("fmin", "fmax", "global_mean", "global_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v):
                raise DataError(f"MelConfig.{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < self.fmax <= nyquist:
            raise DataError(
                f"MelConfig needs 0 <= fmin < fmax <= sample_rate/2 = {nyquist:g} Hz, "
                f"got fmin={self.fmin:g} Hz, fmax={self.fmax:g} Hz"
            )
        if self.trim_top_db is not None:
            if not isinstance(self.trim_top_db, (int, float, np.number)) or not self.trim_top_db > 0:
                raise DataError(f"MelConfig.trim_top_db must be None or > 0 dB, got {self.trim_top_db!r}")
            object.__setattr__(self, "trim_top_db", float(self.trim_top_db))
        if self.min_length not in MIN_LENGTH_MODES:
            raise DataError(f"MelConfig.min_length must be one of {MIN_LENGTH_MODES}, got {self.min_length!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise DataError(f"MelConfig.normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.schema != CONFIG_SCHEMA:
            raise DataError(f"MelConfig.schema must be {CONFIG_SCHEMA} (older dicts: use MelConfig.from_dict), got {self.schema!r}")
        if not self.global_std > 0:
            raise DataError(f"MelConfig.global_std must be > 0 dB, got {self.global_std!r}")
        if isinstance(self.n_ffts, (str, bytes)) or not isinstance(self.n_ffts, (list, tuple)):
            raise DataError(f"MelConfig.n_ffts must be a list of STFT sizes (or empty), got {self.n_ffts!r}")
        ffts = tuple(self.n_ffts)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in ffts):
            raise DataError(f"MelConfig.n_ffts must hold positive integers (samples), got {list(ffts)}")
        object.__setattr__(self, "n_ffts", tuple(int(v) for v in ffts))
        if self.n_ffts and self.channels != len(self.n_ffts):
            raise DataError(f"MelConfig.channels={self.channels} but n_ffts={list(self.n_ffts)} gives one channel "
                            f"per STFT size; set channels={len(self.n_ffts)}")
        if self.crop_frames_max is not None:
            v = self.crop_frames_max
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < self.crop_frames:
                raise DataError(f"MelConfig.crop_frames_max must be None or an integer >= crop_frames="
                                f"{self.crop_frames} (frames), got {v!r}")
            object.__setattr__(self, "crop_frames_max", int(v))
        for name in ("log_offset", "min_seconds", "repeat_below_seconds"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not v > 0):
                raise DataError(f"MelConfig.{name} must be None or a number > 0, got {v!r}")
            object.__setattr__(self, name, None if v is None else float(v))
        for n_fft in self.n_ffts or (self.n_fft,):
            if self.n_mels > n_fft // 2 + 1:
                raise DataError(
                    f"MelConfig.n_mels={self.n_mels} exceeds the {n_fft // 2 + 1} STFT bins of "
                    f"n_fft={n_fft}; lower n_mels or raise n_fft"
                )

    def replace(self, **changes) -> MelConfig:
        """A copy with some fields changed (validated); unknown fields raise a ValueError listing the valid ones."""
        _check_fields(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dict; the later parameters (``LATER_FIELDS``: ``n_ffts``, ``log_offset``, ...) only
        where set, so configs without them keep their earlier dicts and cache keys."""
        d = dataclasses.asdict(self)
        for name, default in LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        if "n_ffts" in d:
            d["n_ffts"] = list(d["n_ffts"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MelConfig:
        """A MelConfig from :meth:`to_dict` output, also one saved before ``schema`` existed (schema 1,
        whose "clip" normalisation standardised each crop: it becomes "crop")."""
        _check_fields(d)
        d = dict(d)
        if "schema" not in d:
            d["schema"] = CONFIG_SCHEMA
            if d.get("normalize") == "clip":
                d["normalize"] = "crop"
        return cls(**d)

    def key(self) -> str:
        """Short stable hash (12 hex digits) of :meth:`to_dict`: equal configs give equal keys."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def crop_samples(self) -> int:
        """Samples a clip is extended to before the STFT: ``crop_frames * hop_length``."""
        return self.crop_frames * self.hop_length

    @property
    def min_samples(self) -> int:
        """Samples every clip is extended to: the crop, or ``min_seconds`` where that is longer."""
        extra = 0 if self.min_seconds is None else int(round(self.min_seconds * self.sample_rate))
        return max(self.crop_samples, extra)

    @property
    def resolutions(self) -> tuple:
        """The STFT sizes, one per feature block: ``n_ffts``, or ``(n_fft,)``."""
        return self.n_ffts or (self.n_fft,)

    @property
    def feature_rows(self) -> int:
        """Rows of a clip's stored features: ``n_mels`` per STFT size."""
        return self.n_mels * len(self.resolutions)


LATER_FIELDS = {"n_ffts": (), "log_offset": None, "min_seconds": None, "repeat_below_seconds": None,
                "crop_frames_max": None}  # left out of to_dict at these values


def _check_fields(d: dict) -> None:
    valid = [f.name for f in dataclasses.fields(MelConfig)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise DataError(f"unknown MelConfig field(s) {unknown}; valid fields: {valid}")


PRESETS: dict[str, MelConfig] = {
    # 12th place: 128x128 crops (~2 s at hop 694), centred padding, per-clip standardisation, 3 channels
    "cnn128": MelConfig(),
    # 9th place: 64x256 crops (~4 s), global normalisation, 1 channel
    "dense64": MelConfig(
        n_mels=64, n_fft=1920, hop_length=690, crop_frames=256, normalize="global",
        global_mean=-35.7, global_std=21.6, channels=1,
    ),
    # 95th place: 128 mels at hop 512, STFT sizes 896/1792/3584 as the three channels, 3 s crops
    # (258 frames at 44.1 kHz), every clip at least 3 s: clips shorter than 1.5 s tiled, longer ones
    # zero-padded; trimming and per-clip standardisation are not published (fatlib keeps cnn128's)
    "multires128": MelConfig(
        n_mels=128, n_fft=1792, hop_length=512, n_ffts=(896, 1792, 3584), channels=3,
        crop_frames=258, min_length="pad", min_seconds=3.0, repeat_below_seconds=1.5,
    ),
    # 3rd place: 128 mels, n_fft 2048, hop 1024, log(mel + 1e-4), no trimming published; training
    # segments of 8-15 s (345-646 frames) in batches of clips of similar length; 1 channel (the
    # frequency encoding channel is the model's freq_encoding option)
    "log128": MelConfig(
        n_mels=128, n_fft=2048, hop_length=1024, crop_frames=345, crop_frames_max=646, log_offset=1e-4,
        channels=1, trim_top_db=None,
    ),
    # 3rd place's 1-D family (model stft1d_3rd): an STFT window of 256 samples ("5 ms per frame or so");
    # the write-up feeds the raw linear-frequency STFT, which LogMel cannot give: 40 mel bands of that STFT
    # (the most a 256-sample window fills without empty filters), log(mel + 1e-4) as log128; hop 128 (half
    # the window) not published: fatlib's choice; training segments of 8-12 s (2756-4134 frames) as the
    # write-up; no trimming, as log128
    "stft256": MelConfig(
        n_mels=40, n_fft=256, hop_length=128, crop_frames=2756, crop_frames_max=4134, log_offset=1e-4,
        channels=1, trim_top_db=None,
    ),
}


def get_preset(name: str, **overrides) -> MelConfig:
    """The preset ``name`` (see :data:`PRESETS`), with ``overrides`` applied (validated)."""
    if name not in PRESETS:
        raise DataError(f"unknown mel preset {name!r}; valid presets: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def _check_cfg(cfg) -> MelConfig:
    if not isinstance(cfg, MelConfig):
        raise TypeError(f"cfg must be a MelConfig (see fatlib.features.get_preset), got {type(cfg).__name__}")
    return cfg


def log_mel(y: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """librosa reference log-mel of a 1-D waveform: (cfg.feature_rows, 1 + len(y) // hop_length) float32
    (dB, or ``log(mel + log_offset)``; several STFT sizes: their blocks stacked along the rows)."""
    import librosa

    from .audio import _check_wave

    _check_cfg(cfg)
    y = np.asarray(_check_wave(y), dtype=np.float32)
    if cfg.n_ffts:  # one block of n_mels rows per STFT size, stacked
        return np.concatenate([log_mel(y, cfg.replace(n_fft=n, n_ffts=(), channels=1)) for n in cfg.n_ffts])
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax, power=2.0, center=True, window="hann", pad_mode="constant",
    )
    if cfg.log_offset is not None:
        return np.log(mel + cfg.log_offset).astype(np.float32)
    return librosa.power_to_db(mel, ref=1.0, amin=AMIN, top_db=TOP_DB).astype(np.float32)


def clip_wave(path_or_y, cfg: MelConfig, *, min_samples: int | None = None) -> np.ndarray:
    """A clip's waveform as every feature path sees it: loaded at ``cfg.sample_rate`` Hz when given a
    path (:func:`load_audio`), trimmed (``cfg.trim_top_db``), then extended to ``min_samples`` samples
    (default ``cfg.crop_samples``; never fewer than ``cfg.min_seconds``) by ``cfg.min_length``.
    Returns float32 1-D.

    The one implementation of these steps: :func:`clip_features` (the cache), ``fatlib.predict``
    (features from audio) and ``fatlib.loaders.WaveDataset`` (on-the-fly training) all call it.
    """
    _check_cfg(cfg)
    if isinstance(path_or_y, (str, os.PathLike)):
        y = load_audio(path_or_y, sample_rate=cfg.sample_rate)
    else:
        y = path_or_y
    if cfg.trim_top_db is not None:
        y = trim_silence(y, top_db=cfg.trim_top_db)
    want = cfg.crop_samples if min_samples is None else min_samples
    if cfg.min_seconds is not None:  # a minimum length independent of the crop (95th place: 3 s)
        want = max(want, cfg.min_samples)
    return fix_length(y, min_samples=want, mode=extend_mode(len(y), cfg))


def extend_mode(n_samples: int, cfg: MelConfig) -> str:
    """How a clip of ``n_samples`` (trimmed) is extended: "repeat" below ``cfg.repeat_below_seconds``,
    else ``cfg.min_length``."""
    if cfg.repeat_below_seconds is not None and n_samples < cfg.repeat_below_seconds * cfg.sample_rate:
        return "repeat"
    return cfg.min_length


def clip_features(path_or_y, cfg: MelConfig) -> np.ndarray:
    """What the feature cache stores for a clip (a waveform or an audio path): :func:`clip_wave`
    (trim, extend to ``cfg.crop_samples``), then :func:`log_mel`. Returns (n_mels, frames) float32 dB."""
    return log_mel(clip_wave(path_or_y, cfg), cfg)


def clip_stats(spec) -> tuple[float, float]:
    """Mean and standard deviation (dB) of one whole clip's log-mel ``(n_mels, frames)``: what
    ``normalize="clip"`` standardises its crops with."""
    x = spec.float() if isinstance(spec, torch.Tensor) else np.asarray(spec, dtype=np.float32)
    return float(x.mean()), float(x.std())


def normalize(spec, cfg: MelConfig, *, stats=None):
    """Normalise dB spectrograms (numpy or torch, any leading dims, last two = (n_mels, frames)).

    ``cfg.normalize``: "clip" standardises with ``stats`` (one (mean, std) per item: the whole clip's,
    from :func:`clip_stats`, numpy or torch; without them each item is taken to be a whole clip), "crop" standardises
    each item over its last two dims, "global" uses ``(x - global_mean) / global_std``, "none" returns
    it unchanged. numpy in -> float32 numpy out, torch in -> torch out (float32 for float16 input).
    """
    _check_cfg(cfg)
    is_torch = isinstance(spec, torch.Tensor)
    if is_torch:
        x = spec if spec.dtype in (torch.float32, torch.float64) else spec.float()
    else:
        x = np.asarray(spec, dtype=np.float32)
    if x.ndim < 2:
        raise DataError(f"normalize expects (..., n_mels, frames), got shape {tuple(x.shape)}")
    if cfg.normalize == "clip" and stats is not None:
        if isinstance(stats, torch.Tensor):  # e.g. a batch's stats already on the device
            st = stats.to(x.device, torch.float32).reshape(-1, 2) if is_torch else stats.float().cpu().numpy().reshape(-1, 2)
        else:
            st = np.asarray(stats, dtype=np.float32).reshape(-1, 2)
            st = torch.as_tensor(st) if is_torch else st
        shape = (-1,) + (1,) * (x.ndim - 1)
        if x.ndim == 2:
            st, shape = st[:1], (1, 1)
        mean, std = st[:, 0].reshape(shape), st[:, 1].reshape(shape)
        if is_torch:
            mean, std = mean.to(x.device), std.to(x.device)
        return (x - mean) / (std + EPS_STD)
    if cfg.normalize in ("clip", "crop"):
        dims = (-2, -1)
        if is_torch:
            mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True, unbiased=False)
        else:
            mean, std = x.mean(axis=dims, keepdims=True), x.std(axis=dims, keepdims=True)
        return (x - mean) / (std + EPS_STD)
    if cfg.normalize == "global":
        return (x - cfg.global_mean) / cfg.global_std
    return x


def to_model_input(spec_batch, cfg: MelConfig, *, stats=None) -> torch.Tensor:
    """(B, n_mels, frames) dB (numpy or torch) -> normalised float32 torch (B, cfg.channels, n_mels, frames).
    ``stats``: (B, 2) whole-clip (mean, std) for ``normalize="clip"`` (see :func:`normalize`)."""
    _check_cfg(cfg)
    x = spec_batch if isinstance(spec_batch, torch.Tensor) else torch.from_numpy(np.asarray(spec_batch))
    if x.dim() != 3 or x.shape[1] != cfg.feature_rows:
        raise DataError(
            f"to_model_input expects (batch, n_mels={cfg.n_mels}"
            + (f" x {len(cfg.n_ffts)} STFT sizes = {cfg.feature_rows} rows" if cfg.n_ffts else "")
            + f", frames), got shape {tuple(x.shape)}; check that the features were made with the same MelConfig"
        )
    x = normalize(x.float(), cfg, stats=stats).unsqueeze(1)
    if cfg.n_ffts:  # (B, 1, n_ffts * n_mels, T) -> one channel per STFT size
        return x.reshape(x.shape[0], len(cfg.n_ffts), cfg.n_mels, x.shape[-1]).contiguous()
    return x.expand(-1, cfg.channels, -1, -1).contiguous() if cfg.channels > 1 else x.contiguous()
