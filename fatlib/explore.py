"""Explore clips, features and augmentations: pure functions, a figure, and a thin ipywidgets explorer.

The steps, each testable without a notebook: :func:`clips_of_class` (which clips a class has in a split),
:func:`clip_batch` (the chosen clip and random partners as the model sees them: a ``crop_frames`` crop,
log-mel in dB, standardised), :func:`augment_view` (one augmentation of ``fatlib.augment`` or one
waveform effect of ``fatlib.wave_augment`` applied to it, with the parameters it drew), then
:func:`plot_view` (waveform, log-mel before and after, their difference) and :func:`view_audio`
(players before and after; a spectrogram augmentation is heard through Griffin-Lim, :func:`invert_log_mel`).

:func:`explorer` wires them to ipywidgets: split -> class -> clip dropdowns, an augmentation chooser, its
strength and the seed, above a plain HTML output (figure and players) that each change replaces in place:
a notebook executed headless (papermill) and converted (nbconvert) shows the first choice.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from .display import LiveView, static_html
from .errors import DataError

__all__ = ["AUGMENT_CHOICES", "Choice", "Explorer", "augment_view", "clip_batch", "clips_of_class", "explorer",
           "invert_log_mel", "plot_view", "view_audio"]


@dataclass(frozen=True)
class Choice:
    """One entry of the augmentation chooser: its readable title, whether it works on the log-mel batch
    ("spec", ``fatlib.augment``) or the waveform ("wave", ``fatlib.wave_augment``), and its strength
    slider (``label``, range, default) turned into the augmentation's keyword arguments by ``kwargs``."""

    title: str
    kind: str
    label: str
    low: float
    high: float
    step: float
    default: float
    kwargs: Callable[[float], dict]


AUGMENT_CHOICES: dict[str, Choice] = {
    "specmix": Choice("SpecMix: a band and a strip from a partner clip (12th place)", "spec",
                      "largest band / strip (share of the axis)", 0.05, 0.5, 0.05, 0.25,
                      lambda s: {"max_band": s, "max_strip": s}),
    "mixup": Choice("mixup: weighted mean with a partner clip (9th place)", "spec", "Beta alpha", 0.1, 2.0, 0.1,
                    0.4, lambda s: {"alpha": s}),
    "mixup_specmix": Choice("mixup, then SpecMix (12th place)", "spec", "Beta alpha", 0.1, 2.0, 0.1, 0.4,
                            lambda s: {"alpha": s}),
    "ormixup": Choice("OR-mixup: mixed with a partner, both clips' labels (3rd place)", "spec", "probability",
                      0.0, 1.0, 0.05, 0.5, lambda s: {"p": s}),
    "specaugment": Choice("SpecAugment: frequency and time masks (9th place)", "spec",
                          "largest time mask (share of the crop)", 0.0, 0.5, 0.05, 0.3, lambda s: {"max_time": s}),
    "zoomcrop": Choice("zoom and crop (12th place)", "spec", "largest zoom", 1.0, 1.5, 0.01, 1.05,
                       lambda s: {"max_zoom": s}),
    "freqshift": Choice("frequency shift along the mel axis", "spec", "largest shift (share of the mel bins)",
                        0.0, 0.25, 0.01, 0.05, lambda s: {"max_shift": s}),
    "pitch_shift": Choice("pitch shift (waveform, 3rd place)", "wave", "largest shift (cents)", 0.0, 1200.0, 50.0,
                          300.0, lambda s: {"max_cents": s}),
    "speed": Choice("speed: tempo and pitch together (waveform, 3rd place)", "wave", "largest change (share)",
                    0.0, 0.5, 0.01, 0.1, lambda s: {"low": 1 - s, "high": 1 + s}),
    "tempo": Choice("tempo, pitch kept (waveform)", "wave", "largest change (share)", 0.0, 0.5, 0.01, 0.1,
                    lambda s: {"low": 1 - s, "high": 1 + s}),
    "reverb": Choice("reverb: a synthetic room (waveform, 3rd place)", "wave", "longest RT60 (s)", 0.2, 3.0, 0.1,
                     1.0, lambda s: {"rt60_seconds": (0.2, s)}),
    "overdrive": Choice("overdrive: gain, then tanh clipping (waveform, 3rd place)", "wave", "largest gain (dB)",
                        2.0, 30.0, 1.0, 10.0, lambda s: {"gain_db": (2.0, s)}),
}


def short_title(name: str) -> str:
    """A readable short name of augmentation ``name`` ("mixup_specmix" -> "mixup, then SpecMix")."""
    c = AUGMENT_CHOICES.get(name)
    return c.title.split(":")[0].split(" (")[0] if c else name


def _choice(name: str) -> Choice:
    if name not in AUGMENT_CHOICES:
        raise DataError(f"unknown augmentation {name!r}; choose one of {sorted(AUGMENT_CHOICES)}")
    return AUGMENT_CHOICES[name]


# ------------------------------------------------------------------------------------------ clips
def _targets(data, split: str):
    return data.test_targets if split == "test" else data.split(split).targets


def labels_text(row, vocab, *, weights: bool = False) -> str:
    """Full class names of a target row ("Bark, Meow"; with ``weights``: "Bark 0.72, Meow 0.28")."""
    row = np.asarray(row, dtype=float)
    order = [i for i in np.argsort(-row, kind="stable") if row[i] > 0]
    return ", ".join(f"{vocab[i]} {row[i]:.2f}" if weights else vocab[i] for i in order) or "(no label)"


def clips_of_class(data, split: str, label: str | None) -> list[int]:
    """Indices of the clips of ``split`` labelled ``label`` (None, or a split without labels: every clip)."""
    n = len(data.split(split).fnames)
    targets = _targets(data, split)
    if label is None or targets is None:
        return list(range(n))
    if label not in data.vocab:
        raise DataError(f"unknown class {label!r}; choose one of the data set's {len(data.vocab)} classes")
    return np.flatnonzero(np.asarray(targets)[:, data.vocab.index(label)] > 0).tolist()


def _single(cfg):
    """The explorer's MelConfig: one STFT size, one channel (the first block of a multi-resolution config)."""
    return cfg.replace(n_fft=cfg.n_ffts[0], n_ffts=(), channels=1) if cfg.n_ffts else cfg.replace(channels=1)


def _crop(path, cfg) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(waveform of the first crop, its log-mel in dB (n_mels, crop_frames), the whole clip's (mean, std) dB)."""
    from .features import clip_stats, clip_wave, log_mel

    y = clip_wave(path, cfg)
    spec = log_mel(y, cfg)
    return y[: cfg.crop_frames * cfg.hop_length], spec[:, : cfg.crop_frames], clip_stats(spec)


def clip_batch(data, cfg, *, split: str, index: int, batch_size: int = 8, seed: int = 0) -> dict:
    """Clip ``index`` of ``split`` and ``batch_size - 1`` partners drawn from the same split with ``seed``,
    each as a training crop (its first ``cfg.crop_frames`` frames): waveforms, dB log-mels, the model input
    (``features.normalize`` with each clip's stats) and the targets. Row 0 is the chosen clip."""
    import torch

    from .features import normalize

    part = data.split(split)
    n = len(part.fnames)
    if not 0 <= index < n:
        raise DataError(f"clip index {index} out of range for the {split} split of {n} clips")
    cfg = _single(cfg)
    others = [i for i in range(n) if i != index]
    rng = np.random.default_rng(seed)
    rows = [index, *rng.choice(others, size=min(batch_size - 1, len(others)), replace=False).tolist()]
    waves, specs, stats = zip(*(_crop(part.paths()[i], cfg) for i in rows))
    targets = _targets(data, split)
    y = (np.asarray(targets, dtype=np.float32)[rows] if targets is not None
         else np.zeros((len(rows), len(data.vocab)), np.float32))
    x = torch.stack([torch.as_tensor(normalize(s, cfg, stats=st))[None] for s, st in zip(specs, stats)])
    return {"split": split, "rows": rows, "fnames": [part.fnames[i] for i in rows], "waves": list(waves),
            "specs": list(specs), "stats": list(stats), "x": x, "y": torch.as_tensor(y), "cfg": cfg}


# ------------------------------------------------------------------------------------- augmenting
def _to_db(x, stats, cfg) -> np.ndarray:
    """Model input back to dB (the inverse of ``features.normalize`` with the clip's stats)."""
    from .features import EPS_STD

    x = np.asarray(x, dtype=np.float32)
    if cfg.normalize == "none":
        return x
    if cfg.normalize == "global":
        return x * cfg.global_std + cfg.global_mean
    mean, std = stats
    return x * (std + EPS_STD) + mean


def _spec_draws(name: str, kwargs: dict, *, batch: int, n_mels: int, n_frames: int, seed: int) -> dict:
    """What ``fatlib.augment``'s callback ``name`` made with ``seed`` drew for row 0 of a batch: the same draws,
    in the same order, from the same generator (tests check the picture against them)."""
    import torch

    from .augment import _axis_masks, _uniform, make_generator, specmix_params, specmix_share

    g = make_generator(seed)
    out: dict = {}
    if name in ("mixup", "mixup_specmix"):
        alpha = kwargs.get("alpha", 0.4)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g).item()))
        lam = rng.beta(alpha, alpha, size=batch)
        out = {"lambda": float(max(lam[0], 1 - lam[0])), "partner": int(torch.randperm(batch, generator=g)[0])}
    if name in ("specmix", "mixup_specmix"):
        partner = int(torch.randperm(batch, generator=g)[0])
        p = specmix_params(batch, n_mels, n_frames, generator=g, max_band=kwargs.get("max_band", 0.25),
                           max_strip=kwargs.get("max_strip", 0.25))
        out.update({"specmix_partner": partner, "band": (int(p.f0[0]), int(p.f[0])),
                    "strip": (int(p.t0[0]), int(p.t[0])), "share": float(specmix_share(p, n_mels, n_frames)[0])})
    elif name == "ormixup":
        partner = int(torch.randperm(batch, generator=g)[0])
        w = 1 - _uniform(batch, kwargs.get("low", 0.4), kwargs.get("high", 0.6), generator=g)
        chosen = bool(torch.rand(batch, generator=g)[0] < kwargs.get("p", 0.5))
        out = {"partner": partner, "partner_weight": float(w[0]) if chosen else 0.0, "applied": chosen}
    elif name == "specaugment":
        n_masks = kwargs.get("n_masks", 2)
        freq = _axis_masks(n_masks, n_mels, kwargs.get("max_freq", 0.15), batch, generator=g, device="cpu")
        time = _axis_masks(n_masks, n_frames, kwargs.get("max_time", 0.3), batch, generator=g, device="cpu")
        out = {"masked_mels": int(freq[0].sum()), "masked_frames": int(time[0].sum())}
    elif name == "zoomcrop":
        zoom = float(_uniform(batch, 1.0, kwargs.get("max_zoom", 1.05), generator=g)[0])
        chosen = bool(torch.rand(batch, generator=g)[0] < kwargs.get("p", 0.75))
        out = {"zoom": zoom if chosen else 1.0, "applied": chosen}
    elif name == "freqshift":
        most, p = int(round(kwargs.get("max_shift", 0.05) * n_mels)), kwargs.get("p", 0.5)
        shift, chosen = 0, False
        if most and p:
            shift = int(torch.randint(-most, most + 1, (batch,), generator=g)[0])
            chosen = bool(torch.rand(batch, generator=g)[0] < p)
        out = {"shift_bins": shift if chosen else 0, "applied": chosen}
    return out


def wave_draws(name: str, kwargs: dict, *, sample_rate: int, seed: int) -> dict:
    """What ``fatlib.wave_augment.EFFECTS[name]`` with ``kwargs`` drew from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    if name == "pitch_shift":
        m = kwargs.get("max_cents", 300.0)
        return {"cents": float(rng.uniform(-m, m))}
    if name in ("speed", "tempo"):
        return {name: float(rng.uniform(kwargs.get("low", 0.9), kwargs.get("high", 1.1)))}
    if name == "reverb":
        rt60 = float(rng.uniform(*kwargs.get("rt60_seconds", (0.2, 1.0))))
        rng.standard_normal(max(1, int(rt60 * sample_rate)))  # the impulse response's noise
        return {"rt60_s": rt60, "wet": float(rng.uniform(*kwargs.get("wet", (0.1, 0.5))))}
    if name == "overdrive":
        return {"gain_db": float(rng.uniform(*kwargs.get("gain_db", (2.0, 10.0))))}
    return {}


def describe_draws(name: str, draws: dict, fnames, cfg) -> str:
    """The drawn parameters in words, for titles."""
    def partner(i):
        return "itself" if i == 0 else fnames[i]

    if name in ("mixup", "mixup_specmix"):
        text = f"lambda {draws['lambda']:.2f}: {1 - draws['lambda']:.2f} of {partner(draws['partner'])}"
        if name == "mixup":
            return text
    if name in ("specmix", "mixup_specmix"):
        (f0, f), (t0, t) = draws["band"], draws["strip"]
        sec = cfg.hop_length / cfg.sample_rate
        mix = (text + "; then ") if name == "mixup_specmix" else ""
        return (mix + f"mel bins {f0}-{f0 + f} and {t0 * sec:.2f}-{(t0 + t) * sec:.2f} s from "
                f"{partner(draws['specmix_partner'])} (share {draws['share']:.2f})")
    if name == "ormixup":
        return (f"weight {draws['partner_weight']:.2f} of {partner(draws['partner'])}, labels of both"
                if draws["applied"] else "not applied in this draw (probability p)")
    if name == "specaugment":
        return f"masked {draws['masked_mels']} of {cfg.n_mels} mel bins, {draws['masked_frames']} of {cfg.crop_frames} frames"
    if name == "zoomcrop":
        return f"zoom x{draws['zoom']:.3f}" if draws["applied"] else "not applied in this draw (probability p)"
    if name == "freqshift":
        return f"shift {draws['shift_bins']:+d} mel bins" if draws["applied"] else "not applied in this draw (probability p)"
    if name == "pitch_shift":
        return f"{draws['cents']:+.0f} cents"
    if name in ("speed", "tempo"):
        return f"{name} x{draws[name]:.3f}"
    if name == "reverb":
        return f"RT60 {draws['rt60_s']:.2f} s, wet {draws['wet']:.2f}"
    if name == "overdrive":
        return f"gain {draws['gain_db']:.1f} dB"
    return ""


def augment_view(batch: dict, name: str, *, strength: float | None = None, seed: int = 0, vocab=()) -> dict:
    """Row 0 of ``batch`` (:func:`clip_batch`) before and after augmentation ``name`` (a key of
    :data:`AUGMENT_CHOICES`) at ``strength`` (None: its default) drawn with ``seed``: the waveforms
    (after: the effect's output, or for a spectrogram augmentation None until :func:`view_audio` inverts
    it), log-mels in dB, the targets and the drawn parameters (``draws``, and in words ``text``)."""
    from .features import log_mel

    choice = _choice(name)
    strength = choice.default if strength is None else float(strength)
    kwargs = choice.kwargs(strength)
    cfg = batch["cfg"]
    before_db, y0 = batch["specs"][0], batch["y"][0].numpy()
    if choice.kind == "spec":
        from .augment import apply_augment, get_augment

        x_aug, y_aug = apply_augment(get_augment(name, seed=seed, **kwargs), batch["x"], batch["y"], training=True)
        after_db = _to_db(x_aug[0, 0].numpy(), batch["stats"][0], cfg)
        draws = _spec_draws(name, kwargs, batch=len(batch["rows"]), n_mels=cfg.n_mels, n_frames=before_db.shape[1],
                            seed=seed)
        wave_after, y_after = None, y_aug[0].numpy()
    else:
        from .audio import fix_length
        from .wave_augment import EFFECTS

        wave = batch["waves"][0]
        out = EFFECTS[name](wave, sample_rate=cfg.sample_rate, rng=np.random.default_rng(seed), **kwargs)
        wave_after = fix_length(np.asarray(out, np.float32)[: len(wave)], min_samples=len(wave), mode="pad")
        after_db = log_mel(wave_after, cfg)[:, : before_db.shape[1]]
        draws, y_after = wave_draws(name, kwargs, sample_rate=cfg.sample_rate, seed=seed), y0
    return {"name": name, "title": choice.title, "strength": strength, "seed": seed, "fname": batch["fnames"][0],
            "split": batch["split"], "cfg": cfg, "wave": batch["waves"][0], "wave_after": wave_after,
            "before": before_db, "after": after_db, "labels": labels_text(y0, vocab) if len(vocab) else "",
            "labels_after": labels_text(y_after, vocab, weights=True) if len(vocab) else "",
            "draws": draws, "text": describe_draws(name, draws, batch["fnames"], cfg)}


# ----------------------------------------------------------------------------------- seeing, hearing
@functools.lru_cache(maxsize=4)
def _mel_pinv(sample_rate, n_fft, n_mels, fmin, fmax) -> np.ndarray:
    import librosa

    return np.linalg.pinv(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


def invert_log_mel(db, cfg, *, n_iter: int = 32) -> np.ndarray:
    """A waveform whose log-mel is about ``db`` (n_mels, frames): dB -> mel power -> linear spectrogram
    through the mel filters' pseudo-inverse (negative values clipped), then ``librosa.griffinlim``.
    (``librosa.feature.inverse.mel_to_audio`` does the same with NNLS: 5.5 s per 2 s crop at 128 mels on
    a busy 2-core machine, against 1.1 s here with the pseudo-inverse cached; same log-mel error.)"""
    import librosa

    power = np.exp(db) - cfg.log_offset if cfg.log_offset is not None else librosa.db_to_power(db)
    inverse = _mel_pinv(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    stft_power = np.maximum(inverse @ np.maximum(power, 0.0), 0.0)
    y = librosa.griffinlim(np.sqrt(stft_power), n_iter=n_iter, hop_length=cfg.hop_length, n_fft=cfg.n_fft,
                           random_state=0)
    return y.astype(np.float32)


def view_audio(view: dict) -> dict:
    """Players of the view: {title: IPython Audio}; a spectrogram augmentation is heard through
    :func:`invert_log_mel` of both log-mels (the original waveform beside them), a waveform effect as is."""
    from .display import audio_player

    cfg, sr = view["cfg"], view["cfg"].sample_rate
    if view["wave_after"] is not None:
        return {"before": audio_player(view["wave"], sample_rate=sr),
                f"after ({view['text']})": audio_player(view["wave_after"], sample_rate=sr)}
    return {"original waveform": audio_player(view["wave"], sample_rate=sr),
            "before (Griffin-Lim of the log-mel)": audio_player(invert_log_mel(view["before"], cfg), sample_rate=sr),
            "after (Griffin-Lim of the augmented log-mel)": audio_player(invert_log_mel(view["after"], cfg),
                                                                          sample_rate=sr)}


def plot_view(view: dict) -> Figure:
    """Waveform before and after, log-mel before and after (one dB scale) and after - before (diverging
    colour map, zero-centred), titled with the clip, its labels and the drawn parameters."""
    import librosa.display

    cfg, sr = view["cfg"], view["cfg"].sample_rate
    fig = Figure(figsize=(11, 9), layout="constrained")
    ax = fig.subplot_mosaic([["wave", "wave_after"], ["before", "after"], ["diff", "diff"]],
                            height_ratios=(1, 1.4, 1.4))
    for key, y, title in (("wave", view["wave"], "waveform of the crop"), ("wave_after", view["wave_after"],
                                                                            "waveform after")):
        if y is None:
            ax[key].axis("off")
            ax[key].text(0.5, 0.5, f"targets after: {view['labels_after']}", ha="center", va="center", wrap=True,
                         fontsize=9)
            continue
        ax[key].plot(np.arange(len(y)) / sr, y, lw=0.5)
        ax[key].set(title=title, xlabel="Time (s)", ylabel="amplitude", xlim=(0, len(y) / sr))
    where = dict(sr=sr, hop_length=cfg.hop_length, x_axis="s", y_axis="mel", fmin=cfg.fmin, fmax=cfg.fmax)
    lo = float(min(view["before"].min(), view["after"].min()))
    hi = float(max(view["before"].max(), view["after"].max()))
    img = librosa.display.specshow(view["before"], ax=ax["before"], cmap="magma", vmin=lo, vmax=hi, **where)
    librosa.display.specshow(view["after"], ax=ax["after"], cmap="magma", vmin=lo, vmax=hi, **where)
    ax["before"].set_title("log-mel before")
    ax["after"].set_title(f"after: {view['text']}", fontsize=9)
    fig.colorbar(img, ax=[ax["before"], ax["after"]], label="dB")
    diff = view["after"] - view["before"]
    limit = float(np.abs(diff).max()) or 1.0
    img = librosa.display.specshow(diff, ax=ax["diff"], cmap="RdBu_r", vmin=-limit, vmax=limit, **where)
    ax["diff"].set_title(f"after - before (max |difference| {limit:.1f} dB; red: louder after, blue: quieter)")
    fig.colorbar(img, ax=ax["diff"], label="dB difference")
    for a in (ax["before"], ax["after"], ax["diff"]):
        a.set(xlabel="Time (s)", ylabel="Frequency (Hz)")
    fig.suptitle(f"{view['split']} {view['fname']}: {view['labels']}\n{view['title']} (strength "
                 f"{view['strength']:g}, seed {view['seed']})", fontsize=10)
    return fig


# -------------------------------------------------------------------------------------- the widget
def explorer(data, cfg, *, split: str = "curated", label: str | None = None, augment: str = "specmix",
             seed: int = 0, batch_size: int = 8, show: bool = True) -> Explorer:
    """An ipywidgets explorer of ``data`` (see the module doc); ``split``, ``label`` (None: the class with
    the most clips), ``augment`` and ``seed`` are its first choice, rendered at once (``show``: displayed)."""
    ex = Explorer(data, cfg, split=split, label=label, augment=augment, seed=seed, batch_size=batch_size)
    if show:
        ex.show()
    return ex


class Explorer(LiveView):
    """The controls and the current view (``view``, ``figure``, ``audio``, ``html``) of :func:`explorer`."""

    def __init__(self, data, cfg, *, split, label, augment, seed, batch_size):
        import ipywidgets as w

        self.data, self.cfg, self.batch_size = data, cfg, batch_size
        splits = [s for s in ("curated", "noisy", "test") if len(data.split(s).fnames)]
        if split not in splits:
            raise DataError(f"explorer: the {split} split has no clips; choose one of {splits}")
        _choice(augment)
        self.split = w.Dropdown(options=splits, value=split, description="split")
        self.label = w.Dropdown(description="class", layout=w.Layout(width="420px"))
        self.clip = w.Dropdown(description="clip", layout=w.Layout(width="520px"))
        self.augment = w.Dropdown(options=[(c.title, k) for k, c in AUGMENT_CHOICES.items()], value=augment,
                                  description="augment", layout=w.Layout(width="520px"))
        self.strength = w.FloatSlider(description="strength", continuous_update=False, readout_format=".2f",
                                      style={"description_width": "initial"}, layout=w.Layout(width="520px"))
        self.seed = w.IntText(value=seed, description="seed")
        self._busy = True
        self._set_classes(label)
        self._set_strength()
        self._busy = False
        self.split.observe(lambda _: self._on("split"), "value")
        self.label.observe(lambda _: self._on("label"), "value")
        self.augment.observe(lambda _: self._on("augment"), "value")
        for widget in (self.clip, self.strength, self.seed):
            widget.observe(lambda _: self._on("other"), "value")
        self.widget = w.VBox([w.HBox([self.split, self.label]), self.clip, w.HBox([self.augment, self.seed]),
                              self.strength])
        self._batch_key, self._batch = None, None
        self.render()

    def _set_classes(self, label=None) -> None:
        split = self.split.value
        targets = _targets(self.data, split)
        if targets is None:
            options = [(f"(unlabelled: all {len(self.data.split(split).fnames)} clips)", None)]
        else:
            counts = np.asarray(targets).sum(axis=0)
            options = [(f"{self.data.vocab[i]} ({int(counts[i])} clips)", self.data.vocab[i])
                       for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
        self.label.options = options
        self.label.value = label if label in [v for _, v in options] else options[0][1]
        self._set_clips()

    def _set_clips(self) -> None:
        part, targets = self.data.split(self.split.value), _targets(self.data, self.split.value)
        rows = clips_of_class(self.data, self.split.value, self.label.value)
        self.clip.options = [(f"{part.fnames[i]}: " + (labels_text(targets[i], self.data.vocab) if targets is not None
                                                       else "unlabelled"), i) for i in rows]
        self.clip.value = rows[0]

    def _set_strength(self) -> None:
        c = AUGMENT_CHOICES[self.augment.value]
        self.strength.min, self.strength.max = -1e9, 1e9  # widen first: min may not pass max on the way
        self.strength.min, self.strength.max, self.strength.step = c.low, c.high, c.step
        self.strength.value, self.strength.description = c.default, c.label

    def _on(self, what: str) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            if what == "split":
                self._set_classes()
            elif what == "label":
                self._set_clips()
            elif what == "augment":
                self._set_strength()
        finally:
            self._busy = False
        self.render()

    def compute(self) -> str:
        """The current choice's view, figure and players, as HTML."""
        key = (self.split.value, self.clip.value, int(self.seed.value))
        if key != self._batch_key:  # the clip and its partners: loaded again only when they change
            self._batch = clip_batch(self.data, self.cfg, split=key[0], index=key[1], batch_size=self.batch_size,
                                     seed=key[2])
            self._batch_key = key
        self.view = augment_view(self._batch, self.augment.value, strength=self.strength.value, seed=key[2],
                                 vocab=self.data.vocab)
        self.figure, self.audio = plot_view(self.view), view_audio(self.view)
        v = self.view
        return static_html(self.figure, self.audio, note=f"{v['split']} clip {v['fname']} ({v['labels']}); "
                           f"{short_title(v['name'])}, strength {v['strength']:g}, seed {v['seed']}: {v['text']}")
