"""Synthetic data set in the exact FSDKaggle2019 layout, for tests, demos and benchmarks.

Each class is a distinct, learnable sound family (tones, harmonic stacks, chirps, band noise, resonant
click trains, AM/FM tones, pulsed noise), each in its own frequency range, with random pitch within the
range, random length and level, over background noise; 1-3 sounds per clip with the multi-label share
of the real splits, and clip lengths spread like them (curated/test mean ~7.6 s, noisy ~14.5 s).
The noisy split has ``noise_rate`` of its clips with a wrong or a missing label and a mild domain shift
(louder background, low-pass filtering); its clean labels are in ``noisy_truth.csv``.
``test_labels.csv`` (fname,labels,usage) lets the test split be scored. Same seed, same bytes.

    python -m fatlib synth input/ --size tiny
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_csv, write_json
from .errors import DataError

__all__ = ["FSD2019_CLASSES", "FAMILIES", "SIZES", "SoundClass", "sound_class", "make_dataset"]

FSD2019_CLASSES = (
    "Accelerating_and_revving_and_vroom", "Accordion", "Acoustic_guitar", "Applause", "Bark", "Bass_drum",
    "Bass_guitar", "Bathtub_(filling_or_washing)", "Bicycle_bell", "Burping_and_eructation", "Bus", "Buzz",
    "Car_passing_by", "Cheering", "Chewing_and_mastication", "Child_speech_and_kid_speaking", "Chink_and_clink",
    "Chirp_and_tweet", "Church_bell", "Clapping", "Computer_keyboard", "Crackle", "Cricket", "Crowd",
    "Cupboard_open_or_close", "Cutlery_and_silverware", "Dishes_and_pots_and_pans", "Drawer_open_or_close",
    "Drip", "Electric_guitar", "Fart", "Female_singing", "Female_speech_and_woman_speaking",
    "Fill_(with_liquid)", "Finger_snapping", "Frying_(food)", "Gasp", "Glockenspiel", "Gong", "Gurgling",
    "Harmonica", "Hi-hat", "Hiss", "Keys_jangling", "Knock", "Male_singing", "Male_speech_and_man_speaking",
    "Marimba_and_xylophone", "Mechanical_fan", "Meow", "Microwave_oven", "Motorcycle", "Printer", "Purr",
    "Race_car_and_auto_racing", "Raindrop", "Run", "Scissors", "Screaming", "Shatter", "Sigh",
    "Sink_(filling_or_washing)", "Skateboard", "Slam", "Sneeze", "Squeak", "Stream", "Strum", "Tap",
    "Tick-tock", "Toilet_flush", "Traffic_noise_and_roadway_noise", "Trickle_and_dribble",
    "Walk_and_footsteps", "Water_tap_and_faucet", "Waves_and_surf", "Whispering", "Writing", "Yell",
    "Zipper_(clothing)",
)
FAMILIES = ("tone", "harmonic", "chirp", "band_noise", "clicks", "am_tone", "fm_tone", "pulsed_noise")
_N_RANGES = 10  # frequency ranges per family: 8 families x 10 ranges = 80 distinct classes
_RANGE_EDGES_HZ = np.geomspace(150.0, 9000.0, _N_RANGES + 1)
MAX_CLASSES = len(FAMILIES) * _N_RANGES

SIZES = {  # --size presets of the CLI
    "tiny": dict(n_classes=10, n_curated=80, n_noisy=80, n_test=40, max_seconds=3.0),
    "small": dict(n_classes=20, n_curated=600, n_noisy=1200, n_test=300, max_seconds=8.0),
    "full": dict(n_classes=80, n_curated=4970, n_noisy=19815, n_test=4481, max_seconds=None),
}


@dataclass(frozen=True)
class _SplitSpec:
    name: str          # CSV stem and folder
    multi_share: float  # share of clips with 2-3 labels (FSDKaggle2019)
    long_share: float   # share of ~15 s clips (noisy); the rest log-normal around 7.6 s
    shifted: bool       # domain shift (noisy)


_SPLITS = {
    "curated": _SplitSpec("train_curated", 0.14, 0.0, False),
    "noisy": _SplitSpec("train_noisy", 0.16, 0.92, True),
    "test": _SplitSpec("test", 0.29, 0.0, False),
}


@dataclass(frozen=True)
class SoundClass:
    """A class's sound family: frequency range (Hz) and modulation/repetition rate range (Hz)."""

    family: str
    f_lo_hz: float
    f_hi_hz: float
    rate_lo_hz: float
    rate_hi_hz: float
    rising: bool  # chirps: sweep up (else down)


def sound_class(index: int) -> SoundClass:
    """The sound family of class ``index`` (fixed: the same index sounds the same for every seed)."""
    if not 0 <= index < MAX_CLASSES:
        raise DataError(f"class index {index} out of range: synth has {MAX_CLASSES} distinct sound families")
    family = index % len(FAMILIES)
    band = (3 * (index // len(FAMILIES)) + 7 * family) % _N_RANGES  # neighbours differ in range too
    rate_lo = float(np.random.default_rng(index).uniform(1.5, 12.0))
    return SoundClass(FAMILIES[family], float(_RANGE_EDGES_HZ[band]), float(_RANGE_EDGES_HZ[band + 1]),
                      rate_lo, rate_lo * 1.3, rising=band % 2 == 0)


# ---------------------------------------------------------------------------------------- audio
def _band_noise(n: int, f_lo: float, f_hi: float, sr: int, rng) -> np.ndarray:
    from scipy.fft import irfft, next_fast_len, rfft

    m = next_fast_len(n, real=True)  # a length with small prime factors: fast FFT
    spec = rfft(rng.standard_normal(m))
    freqs = np.fft.rfftfreq(m, 1.0 / sr)
    spec[(freqs < f_lo) | (freqs > f_hi)] = 0
    return irfft(spec, m)[:n]


def _event(cls: SoundClass, n: int, sr: int, rng) -> np.ndarray:
    """One sound of class ``cls``, ``n`` samples, unit RMS."""
    t = np.arange(n) / sr
    f = rng.uniform(cls.f_lo_hz, cls.f_hi_hz)
    rate = rng.uniform(cls.rate_lo_hz, cls.rate_hi_hz)
    phase0 = rng.uniform(0, 2 * np.pi)
    fam = cls.family
    if fam == "tone":
        y = np.sin(2 * np.pi * f * t + phase0)
    elif fam == "harmonic":
        y = sum(np.sin(2 * np.pi * h * f * t + h * phase0) / h for h in range(1, 9) if h * f < 0.45 * sr)
    elif fam == "chirp":  # repeated one-octave sweeps
        frac = (t * rate) % 1.0
        f_inst = f * 2.0 ** (frac if cls.rising else 1.0 - frac)
        y = np.sin(2 * np.pi * np.cumsum(f_inst) / sr + phase0)
    elif fam == "band_noise":
        y = _band_noise(n, f / 2 ** 0.25, f * 2 ** 0.25, sr, rng)
    elif fam == "clicks":  # resonant clicks (decaying sinusoids) at `rate` per second
        from scipy.signal import fftconvolve

        kt = np.arange(int(0.03 * sr)) / sr
        kernel = np.sin(2 * np.pi * f * kt) * np.exp(-kt / rng.uniform(0.004, 0.01))
        impulses = np.zeros(n)
        impulses[(np.arange(0, n / sr, 1.0 / rate) * sr).astype(np.int64)] = 1.0
        y = fftconvolve(impulses, kernel)[:n]
    elif fam == "am_tone":
        y = np.sin(2 * np.pi * f * t + phase0) * (1 + 0.9 * np.sin(2 * np.pi * rate * t))
    elif fam == "fm_tone":
        depth = rng.uniform(0.05, 0.12) * f / rate
        y = np.sin(2 * np.pi * f * t + depth * np.sin(2 * np.pi * rate * t) + phase0)
    else:  # pulsed_noise: octave band noise gated at rate/4 Hz, duty 0.5
        gate = ((t * rate / 4) % 1.0 < 0.5).astype(np.float64)
        y = _band_noise(n, f / 2 ** 0.5, f * 2 ** 0.5, sr, rng) * gate
    rms = np.sqrt(np.mean(y ** 2))
    return y / rms if rms > 0 else y


def _fade(n: int, sr: int) -> np.ndarray:
    ramp = min(int(0.01 * sr), n // 2)
    env = np.ones(n)
    if ramp:
        env[:ramp] = np.linspace(0, 1, ramp)
        env[n - ramp:] = np.linspace(1, 0, ramp)
    return env


@dataclass(frozen=True)
class _Clip:
    path: Path
    n_samples: int
    classes: tuple[int, ...]  # the sounds actually in the clip (clean labels)
    shifted: bool
    seed: tuple[int, ...]


def _render(clip: _Clip, sr: int) -> np.ndarray:
    """float64 waveform in [-1, 1]."""
    rng = np.random.default_rng(list(clip.seed))
    n = clip.n_samples
    noise_db = rng.uniform(-50, -40) + (10 if clip.shifted else 0)
    y = rng.standard_normal(n)
    y *= 10 ** (noise_db / 20) / max(np.sqrt(np.mean(y ** 2)), 1e-12)
    for k in clip.classes:
        m = min(n, max(int(0.25 * sr), int(rng.uniform(0.4, 1.0) * n)))
        start = int(rng.integers(0, n - m + 1))
        level = 10 ** (rng.uniform(-26, -14) / 20)
        y[start:start + m] += level * _fade(m, sr) * _event(sound_class(k), m, sr, rng)
    if clip.shifted:  # a different microphone/channel
        from scipy.signal import butter, sosfilt

        y = sosfilt(butter(4, min(rng.uniform(6000, 12000), 0.45 * sr), fs=sr, output="sos"), y)
    peak = np.abs(y).max()
    return y * (0.9 / peak) if peak > 0.9 else y


def _write_clip(clip: _Clip, sr: int) -> None:
    import soundfile as sf

    pcm = np.round(_render(clip, sr) * 32767).astype(np.int16)
    with atomic_path(clip.path) as tmp:
        sf.write(tmp, pcm, sr, subtype="PCM_16", format="WAV")


# ------------------------------------------------------------------------------------- metadata
def _lengths_s(n: int, spec: _SplitSpec, max_seconds, rng) -> np.ndarray:
    mu = np.log(7.6) - 0.8 ** 2 / 2  # log-normal with mean 7.6 s
    lengths = np.clip(rng.lognormal(mu, 0.8, n), 0.3, 30.0)
    long = rng.random(n) < spec.long_share
    lengths[long] = rng.uniform(14.5, 15.5, long.sum())
    if max_seconds is not None:
        lengths = np.minimum(lengths, max_seconds)
    return lengths


def _label_sets(n: int, n_classes: int, multi_share: float, rng) -> list[tuple[int, ...]]:
    """Primary labels cycle through the classes (balanced); 2-3 labels on ``multi_share`` of clips."""
    primary = np.concatenate([rng.permutation(n_classes) for _ in range(n // n_classes + 1)])[:n]
    rng.shuffle(primary)
    out = []
    for p in primary:
        n_labels = 1 if rng.random() >= multi_share else (2 if rng.random() < 0.8 else 3)
        others = rng.permutation([c for c in range(n_classes) if c != p])[: n_labels - 1]
        out.append(tuple(sorted([int(p), *map(int, others)])))
    return out


def _corrupt(labels: list[tuple[int, ...]], n_classes: int, noise_rate: float, rng) -> list[tuple[int, ...]]:
    """Exactly round(noise_rate * n) clips get a wrong label (one swapped) or a missing one (one dropped)."""
    noisy = list(labels)
    for i in rng.choice(len(labels), size=round(noise_rate * len(labels)), replace=False):
        true = list(labels[i])
        true.pop(int(rng.integers(len(true))))
        others = [c for c in range(n_classes) if c not in labels[i]]
        if others and (not true or rng.random() < 0.5):  # wrong: another class in its place
            true.append(int(rng.choice(others)))
        noisy[i] = tuple(sorted(true))
    return noisy


def _fnames(n: int, rng) -> list[str]:
    names: list[str] = []
    seen = set()
    while len(names) < n:
        name = f"{int(rng.integers(2 ** 32)):08x}.wav"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _labels_field(classes, names) -> str:
    return ",".join(names[c] for c in classes)


def _check_args(n_classes, counts, noise_rate, max_seconds, sample_rate, class_names) -> list[str]:
    """The class names, after validating every argument."""
    if not 2 <= n_classes <= MAX_CLASSES:
        raise DataError(f"n_classes={n_classes}: must be 2..{MAX_CLASSES} (one distinct sound family each)")
    names = list(FSD2019_CLASSES[:n_classes]) if class_names is None else [str(c) for c in class_names]
    bad = [c for c in names if not c.strip() or "," in c or c != c.strip()]
    if len(names) != n_classes or len(set(names)) != len(names) or bad:
        raise DataError(f"class_names: need {n_classes} (= n_classes) distinct names without commas or "
                        f"surrounding spaces; got {len(names)}, invalid {bad[:5]}")
    for key, value in counts.items():
        if value < 0:
            raise DataError(f"{key}={value}: must be >= 0")
    if not 0 <= noise_rate <= 1:
        raise DataError(f"noise_rate={noise_rate}: must be a fraction in [0, 1]")
    if max_seconds is not None and max_seconds < 0.3:
        raise DataError(f"max_seconds={max_seconds}: must be None or >= 0.3 s")
    if sample_rate < 8000:
        raise DataError(f"sample_rate={sample_rate} Hz: use >= 8000 (FSDKaggle2019 is 44100)")
    return names


def make_dataset(out_dir, *, n_classes=10, n_curated=120, n_noisy=120, n_test=40, noise_rate=0.3,
                 max_seconds=None, sample_rate=44100, seed=0, class_names=None, progress=False,
                 n_jobs=None) -> Path:
    """Write a synthetic FSDKaggle2019-format data set into ``out_dir`` and return it.

    Writes ``train_curated/``, ``train_noisy/``, ``test/`` (16-bit mono wav at ``sample_rate`` Hz),
    ``train_curated.csv``, ``train_noisy.csv`` (fname,labels), ``sample_submission.csv`` (fname + one
    zero column per class in vocabulary order), ``test_labels.csv`` (fname,labels,usage Public/Private)
    and ``noisy_truth.csv`` (the clean labels of the noisy clips). Clip lengths are capped at
    ``max_seconds`` (None: up to 30 s). Class names default to the first ``n_classes`` FSDKaggle2019
    names. ``n_jobs`` threads render and write the audio (None: up to 8, one per core).
    The CSVs are written last, so an interrupted run leaves no loadable half data set.
    """
    counts = dict(n_curated=n_curated, n_noisy=n_noisy, n_test=n_test)
    names = _check_args(n_classes, counts, noise_rate, max_seconds, sample_rate, class_names)
    out = Path(out_dir)
    params = dict(n_classes=n_classes, **counts, noise_rate=noise_rate, max_seconds=max_seconds,
                  sample_rate=sample_rate, seed=seed, class_names=list(names))
    if _already_made(out, params):
        return out
    rng = np.random.default_rng(seed)
    fnames = _fnames(n_curated + n_noisy + n_test, rng)
    clips: list[_Clip] = []
    tables: dict[str, pd.DataFrame] = {}
    start = 0
    for split_id, (key, n) in enumerate(zip(_SPLITS, counts.values())):
        spec = _SPLITS[key]
        split_fnames = fnames[start:start + n]
        start += n
        truth = _label_sets(n, n_classes, spec.multi_share, rng)
        lengths = _lengths_s(n, spec, max_seconds, rng)
        clips += [_Clip(out / spec.name / f, int(round(s * sample_rate)), c, spec.shifted, (seed, split_id, i))
                  for i, (f, c, s) in enumerate(zip(split_fnames, truth, lengths))]
        given = _corrupt(truth, n_classes, noise_rate, rng) if key == "noisy" else truth
        tables[key] = pd.DataFrame({"fname": split_fnames, "labels": [_labels_field(c, names) for c in given]})
        if key == "noisy":
            tables["noisy_truth"] = pd.DataFrame({"fname": split_fnames,
                                                  "labels": [_labels_field(c, names) for c in truth]})
        if key == "test":
            usage = np.full(n, "Private", dtype=object)
            usage[rng.permutation(n)[: round(0.25 * n)]] = "Public"
            tables["test_labels"] = tables["test"].assign(usage=usage)
    for spec in _SPLITS.values():
        (out / spec.name).mkdir(parents=True, exist_ok=True)
    _render_all(clips, sample_rate, progress=progress, n_jobs=n_jobs)
    write_csv(out / "train_curated.csv", tables["curated"])
    write_csv(out / "train_noisy.csv", tables["noisy"])
    write_csv(out / "noisy_truth.csv", tables["noisy_truth"])
    write_csv(out / "test_labels.csv", tables["test_labels"])
    sub = pd.DataFrame(0, index=range(n_test), columns=names)
    sub.insert(0, "fname", tables["test"]["fname"])
    write_csv(out / "sample_submission.csv", sub)
    write_json(out / _MARKER, params)
    return out


_MARKER = "synth.json"
_OUTPUTS = ("train_curated.csv", "train_noisy.csv", "sample_submission.csv", "test_labels.csv", "noisy_truth.csv")


def _already_made(out: Path, params: dict) -> bool:
    """True when ``out`` holds a finished synthetic set made with ``params`` (a rerun does nothing).

    Never overwrites a data set it did not make, or one made with other parameters: nothing a user
    made is lost.
    """
    marker = out / _MARKER
    if marker.exists():
        try:
            made = json.loads(marker.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{marker}: unreadable ({e}); delete {out} and make the data set again.") from e
        if made == params and all((out / f).exists() for f in _OUTPUTS):
            return True
        raise DataError(
            f"{out} already holds a synthetic data set made with other parameters ({marker}). "
            "Write the new one into an empty folder, or delete this one first."
        )
    clash = [f for f in _OUTPUTS[:3] if (out / f).exists()]
    if clash:
        raise DataError(
            f"{out} already holds a data set ({', '.join(clash)}) that synth did not make; refusing to overwrite it. "
            "Choose an empty output folder."
        )
    return False


def _render_all(clips: list[_Clip], sample_rate: int, *, progress: bool, n_jobs) -> None:
    if n_jobs is None:
        n_jobs = min(os.cpu_count() or 1, 8) if len(clips) >= 32 else 1
    if n_jobs < 1:
        raise DataError(f"n_jobs={n_jobs}: must be >= 1 (or None for automatic)")

    def write(clip):
        return _write_clip(clip, sample_rate)

    if n_jobs == 1:
        done = map(write, clips)
    else:
        pool = ThreadPoolExecutor(max_workers=n_jobs)  # numpy/FFT/soundfile release the GIL
        done = pool.map(write, clips)
    if progress:
        from .progress import progress as show_progress

        done = show_progress(done, total=len(clips), label="synth: clips written")
    try:
        for _ in done:
            pass
    finally:
        if n_jobs > 1:
            pool.shutdown(cancel_futures=True)
