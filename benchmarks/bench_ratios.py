"""Issue 21's ratios, measured in one run and printed as one table with the baseline beside each.

1. ``logmel``: ``LogMel`` (torch, batched) vs ``log_mel`` (librosa, clip by clip) on 64 clips x 5 s
   (cnn128) at 2 threads (goal >= 5x; parity <= 0.01 dB is in tests/test_features.py); also at 1 thread
   in CPU seconds (robust on a shared machine).
2. ``fit``: fatlib's training loop (a fastai Learner with the callbacks a fold uses: channels-last on the
   CPU, the epoch log, the one-cycle schedule) vs a plain PyTorch loop over the same model, batch and
   in-memory data (goal >= 0.95x samples/s).
3. ``workers``: DataLoader workers 0 / 1 / 2 on the feature-cache path of the default model: samples/s
   of a training epoch, each against workers 0.
4. ``compile``: ``torch.compile`` (CPU inductor, opt-in) vs eager, the plain loop's samples/s after
   compiling (the compile seconds printed beside it).
5. ``fold``: the 3rd place's training (its own model ``shallow_cnn_3rd`` with frequency encoding, preset
   log128 with 8-12 s segments, waveform effects and OR-mixup of waveforms; named here, not read from the
   recipe) vs the 95th's recipe at equal optimizer steps, one fold's time split into decode (loading,
   trimming, cropping), effects, features (LogMel, batched effects, OR-mixup, normalisation) and model step
   (forward + backward + optimizer), with the per-clip librosa effects (before) and the batched ones (after)
   (goal: 3rd / 95th <= 1.5); and the model steps alone: the floor of that ratio, whatever the data path
   costs. Both at the real-audio benchmark's auto_scale settings (batch 16, width 0.25).

Timings interleave baseline and candidate repetitions and take medians; on a machine shared with other
jobs, absolute figures move a lot, the ratios much less.

    python benchmarks/bench_ratios.py            # about 10 min on 2 busy CPU cores (load average 4-6)
    python benchmarks/bench_ratios.py --quick    # smaller sizes (about 1.5 min)
    python benchmarks/bench_ratios.py --only logmel,fold   # some parts
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROWS: list[tuple[str, str, str, str, str]] = []  # (measure, baseline, candidate, ratio, goal)
PARTS = ("logmel", "fit", "workers", "compile", "fold")


def row(measure: str, baseline: str, candidate: str, ratio: float | str, goal: str = "") -> None:
    ratio_s = ratio if isinstance(ratio, str) else f"{ratio:.2f}x"
    ROWS.append((measure, baseline, candidate, ratio_s, goal))
    print(f"  {measure}: {candidate} vs {baseline} -> {ratio_s} {goal}", flush=True)


class Clock:
    """How a section is timed: ``wall`` (wall seconds at torch's default threads, 2 here: what a user
    waits, but on a shared machine other jobs' load lands in it) or ``cpu`` (one torch thread, that
    thread's CPU seconds: the work done, steady under other jobs' load)."""

    def __init__(self, name: str):
        self.name = name
        self.now = time.thread_time if name == "cpu" else time.perf_counter
        self.label = "1 thread, CPU s" if name == "cpu" else f"{torch.get_num_threads()} threads, wall"

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        self._threads = torch.get_num_threads()
        if self.name == "cpu":
            torch.set_num_threads(1)
        self._limit = threadpool_limits(1 if self.name == "cpu" else self._threads)
        return self

    def __exit__(self, *exc):
        self._limit.restore_original_limits()
        torch.set_num_threads(self._threads)


CLOCKS = ("wall", "cpu")


def interleaved(cands: dict, reps: int, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds of each candidate, repetitions interleaved (after one warm-up call each)."""
    for f in cands.values():
        f()
    times = {k: [] for k in cands}
    for _ in range(reps):
        for k, f in cands.items():
            start = clock()
            f()
            times[k].append(clock() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


# 1. log-mel ------------------------------------------------------------------------------------------
def bench_logmel(quick: bool) -> None:
    from bench_features import synthetic_clips

    from fatlib.features import get_preset, log_mel
    from fatlib.logmel import LogMel

    cfg = get_preset("cnn128")
    count, seconds = (16, 5.0) if quick else (64, 5.0)
    clips = synthetic_clips(count, seconds)
    batch = torch.from_numpy(np.stack(clips))
    module = LogMel(cfg)
    from threadpoolctl import threadpool_limits

    reps = 3 if quick else 5
    lib = lambda: [log_mel(y, cfg) for y in clips]  # noqa: E731
    n = torch.get_num_threads()
    times = {}
    for name in CLOCKS:
        # the interleaved partner is librosa at 1 BLAS thread: at 2 its OpenBLAS threads keep spinning
        # after each call and slow whatever runs next (LogMel right after it: about 0.8x its speed)
        with Clock(name) as clock, torch.inference_mode(), threadpool_limits(1):
            times[name] = interleaved({"librosa": lib, "LogMel": lambda: module(batch)}, reps=reps, clock=clock.now)
    with threadpool_limits(n):  # librosa with its BLAS on every thread, on its own
        lib_n = interleaved({"librosa": lib}, reps=reps)["librosa"]
    t, best = times["wall"], min(times["wall"]["librosa"], lib_n)
    blas = 1 if times["wall"]["librosa"] <= lib_n else n
    row(f"LogMel ({n} threads) / librosa log_mel at its faster BLAS thread count ({blas} of 1, {n}), "
        f"{len(clips)} clips x {seconds:g} s, wall", f"librosa {len(clips) / best:.0f} clips/s",
        f"LogMel {len(clips) / t['LogMel']:.0f} clips/s", best / t["LogMel"], "goal >= 5x")
    t = times["cpu"]
    row(f"LogMel / librosa log_mel, {len(clips)} clips x {seconds:g} s (1 thread each, CPU s)",
        f"librosa {len(clips) / t['librosa']:.0f} clips/s", f"LogMel {len(clips) / t['LogMel']:.0f} clips/s",
        t["librosa"] / t["LogMel"])


# 2. fit vs plain loop, 4. torch.compile ----------------------------------------------------------------
def _default_model(n_classes: int):
    from fatlib.models import create_model

    return create_model("xresnet18", n_classes=n_classes, in_channels=3, width_mult=0.25)


def _in_memory(n: int, n_classes: int, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 128, frames, generator=g)
    y = (torch.rand(n, n_classes, generator=g) < 0.1).float()
    return x, y


class _PlainLoop:
    """The plain PyTorch loop: AdamW, BCE, shuffled in-memory batches, channels-last as fatlib on the CPU."""

    def __init__(self, x, y, bs: int, *, compile_model: bool = False):
        self.x, self.y, self.bs = x, y, bs
        torch.manual_seed(0)
        self.model = _default_model(y.shape[1]).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-2)
        self.loss = torch.nn.BCEWithLogitsLoss()
        self.fwd = torch.compile(self.model) if compile_model else self.model

    def epoch(self) -> None:
        perm = torch.randperm(len(self.x))
        for k in range(0, len(self.x) - self.bs + 1, self.bs):
            idx = perm[k : k + self.bs]
            xb = self.x[idx].contiguous(memory_format=torch.channels_last)
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.fwd(xb), self.y[idx]).backward()
            self.opt.step()


def _fatlib_learner(x, y, bs: int):
    """A Learner as fatlib.train builds a fold's (ChannelsLast on the CPU, EpochLog, CSVLogger, lwlrap
    metric, one-cycle), over the same in-memory tensors through fatlib's DeviceLoader."""
    import fastai.callback.progress  # noqa: F401
    import fastai.callback.schedule  # noqa: F401
    from fastai.callback.progress import CSVLogger
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch.utils.data import TensorDataset

    from fatlib.callbacks import EpochLog
    from fatlib.loaders import ChannelsLast, DeviceLoader
    from fatlib.losses import get_loss
    from fatlib.metrics import LwlrapMetric

    torch.manual_seed(0)
    train = DeviceLoader(TensorDataset(x, y), bs=bs, shuffle=True, drop_last=True)
    valid = DeviceLoader(TensorDataset(x[:bs], y[:bs]), bs=bs, shuffle=False)
    tmp = tempfile.mkdtemp()
    cbs = [ChannelsLast(), EpochLog(lambda s: None), CSVLogger(fname="h.csv")]
    return Learner(DataLoaders(train, valid), _default_model(y.shape[1]), loss_func=get_loss("bce"),
                   metrics=[LwlrapMetric()], cbs=cbs, wd=1e-2, path=tmp, model_dir=".")


class _TrainOnly:
    """Times a fit's training phase only (validation skipped), as a callback."""

    def __init__(self, now=time.perf_counter):
        from fastai.callback.core import Callback, CancelValidException

        outer = self

        class Timer(Callback):
            order = 99

            def before_train(self):
                outer.start = now()

            def after_train(self):
                outer.seconds = now() - outer.start

            def before_validate(self):
                raise CancelValidException

        self.cb = Timer()
        self.seconds = 0.0


def bench_fit(quick: bool) -> None:
    bs, n_batches, frames = 32, (2 if quick else 4), 258  # multires128 crops: the default recipe's input
    x, y = _in_memory(bs * n_batches, 20, frames)
    plain = _PlainLoop(x, y, bs)
    learn = _fatlib_learner(x, y, bs)
    for name in CLOCKS:
        with Clock(name) as clock:
            timer = _TrainOnly(clock.now)

            def fatlib_epoch(timer=timer):
                with learn.no_bar(), learn.no_logging():
                    learn.fit_one_cycle(1, 1e-3, cbs=[timer.cb])
                return timer.seconds

            fatlib_epoch()
            plain.epoch()
            t_plain, t_fat = [], []
            for _ in range(3 if quick else 5):
                start = clock.now()
                plain.epoch()
                t_plain.append(clock.now() - start)
                t_fat.append(fatlib_epoch())
        n = bs * n_batches
        sp, sf = n / float(np.median(t_plain)), n / float(np.median(t_fat))
        row(f"fatlib fit / plain PyTorch loop (xresnet18 w0.25, batch {bs}, 3x128x{frames}, in memory; {clock.label})",
            f"plain {sp:.1f} samples/s", f"fatlib {sf:.1f} samples/s", sf / sp, "goal >= 0.95x")


def bench_compile(quick: bool) -> None:
    bs, n_batches, frames = 16, (2 if quick else 4), 258
    x, y = _in_memory(bs * n_batches, 20, frames)
    eager = _PlainLoop(x, y, bs)
    try:
        comp = _PlainLoop(x, y, bs, compile_model=True)
        start = time.perf_counter()
        comp.epoch()  # compiles forward and backward
        compile_s = time.perf_counter() - start
    except Exception as exc:  # no compiler: say so in the table
        row("torch.compile (inductor) / eager, plain loop", "eager", f"unavailable: {type(exc).__name__}", "-")
        return
    t = interleaved({"eager": eager.epoch, "compiled": comp.epoch}, reps=2 if quick else 3)
    n = bs * n_batches
    row(f"torch.compile / eager, plain loop (opt-in; first epoch {compile_s:.0f} s incl. compiling)",
        f"eager {n / t['eager']:.1f} samples/s", f"compiled {n / t['compiled']:.1f} samples/s",
        t["eager"] / t["compiled"])


# 3. DataLoader workers ---------------------------------------------------------------------------------
def _synth_data(tmp: Path, n: int, max_seconds: float, seed: int = 0):
    from fatlib.dataset import FatData
    from fatlib.synth import make_dataset

    root = make_dataset(tmp / "data", n_classes=8, n_curated=n, n_noisy=0, n_test=0, max_seconds=max_seconds, seed=seed)
    return FatData.from_dir(root).curated


def bench_workers(quick: bool, tmp: Path) -> None:
    import fastai.callback.progress  # noqa: F401
    from fastai.learner import Learner

    from fatlib.cache import FeatureCache
    from fatlib.features import get_preset
    from fatlib.loaders import ChannelsLast, build_dataloaders, input_callbacks
    from fatlib.losses import get_loss

    cfg = get_preset("multires128")
    n = 32 if quick else 64
    split = _synth_data(tmp / "workers", n, 6.0)
    cache = FeatureCache.build(split.paths(), cfg, cache_dir=tmp / "workers_cache", name="curated", progress=False)
    rows = np.arange(n)
    rates = {}
    learners = {}
    for w in (0, 1, 2):
        dls = build_dataloaders([(cache, rows, split.targets)], [(cache, rows[:16], split.targets[:16])], cfg=cfg,
                                batch_size=16, n_workers=w, mix_p=0.5)
        torch.manual_seed(0)
        learners[w] = Learner(dls, _default_model(split.targets.shape[1]), loss_func=get_loss("bce"),
                              cbs=input_callbacks(cfg) + [ChannelsLast()])
    timers = {w: _TrainOnly() for w in learners}

    def epoch(w):
        learn = learners[w]
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-3, cbs=[timers[w].cb])
        return timers[w].seconds

    for w in learners:
        epoch(w)  # start the (persistent) workers, warm the page cache
    times = {w: [] for w in learners}
    for _ in range(2 if quick else 3):
        for w in learners:
            times[w].append(epoch(w))
    n_train = len(learners[0].dls.train) * 16
    for w in learners:
        rates[w] = n_train / float(np.median(times[w]))
    for w in (1, 2):
        row(f"DataLoader workers {w} / 0 (cache path, xresnet18 w0.25, batch 16, multires128)",
            f"workers 0 {rates[0]:.1f} samples/s", f"workers {w} {rates[w]:.1f} samples/s", rates[w] / rates[0])


# 5. fold split -------------------------------------------------------------------------------------------
def _recipe_stage(name: str, **overrides):
    """The first stage of recipe ``name`` with ``overrides`` (model, preset, mel fields) applied."""
    from fatlib.recipes import load_recipe
    from fatlib.train import StageConfig

    fields = load_recipe(name).stage_fields()
    fields = {k: v for k, v in fields.items() if k in StageConfig.__dataclass_fields__}
    fields.update(overrides, name=name)
    return StageConfig(**fields)


# The 3rd place's own model on its preset, named here so the benchmark does not depend on the recipe file:
# shallow_cnn_3rd with the frequency-encoding channel, log128, training segments of 8-12 s (345-517 frames)
THIRD_PLACE = dict(model="shallow_cnn_3rd", model_kwargs={"freq_encoding": True}, preset="log128",
                   mel={"crop_frames": 345, "crop_frames_max": 517})


class _FoldRunner:
    """One optimizer step at a time of ``stage``'s training at auto_scale's small-data settings (batch 16,
    width 0.25), timed in four parts: decode, effects, features, model step. ``batched``: None for the
    cache path, else whether the waveform effects run batched (on the device) or per clip (librosa)."""

    PARTS = ("decode", "effects", "features", "model step")

    def __init__(self, stage, split, tmp: Path, *, batched: bool | None):
        from fatlib.augment import get_augment
        from fatlib.cache import FeatureCache
        from fatlib.features import get_preset
        from fatlib.loaders import ChannelsLast, build_dataloaders, input_callbacks
        from fatlib.losses import get_loss
        from fatlib.models import create_model
        from fatlib.wave_augment import WaveAugment

        self.cfg = cfg = get_preset(stage.preset, **stage.mel)
        bs = 16
        rows = np.arange(len(split.targets))
        torch.manual_seed(0)
        np.random.seed(0)
        if stage.wave_augment:
            src = split.paths()
            aug = WaveAugment(sample_rate=cfg.sample_rate, p=stage.wave_p, probs=stage.wave_effects or None, seed=0)
            dls = build_dataloaders([(src, rows, split.targets)], [(src, rows[:4], split.targets[:4])], cfg=cfg,
                                    mode="wave", batch_size=bs, n_workers=0, augment=aug, batched_effects=bool(batched))
        else:
            cache = FeatureCache.build(split.paths(), cfg, cache_dir=tmp / f"cache_{stage.name}", name="curated",
                                       progress=False)
            dls = build_dataloaders([(cache, rows, split.targets)], [(cache, rows[:4], split.targets[:4])], cfg=cfg,
                                    batch_size=bs, n_workers=0, mix_p=stage.sound_mix_p, mix_max=stage.sound_mix_max)
        self.model = create_model(stage.model, n_classes=split.targets.shape[1], in_channels=cfg.channels,
                                  **{**stage.model_kwargs, "width_mult": 0.25}).to(memory_format=torch.channels_last)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-2)
        self.loss_fn = get_loss(stage.loss)
        cbs = [get_augment(a, seed=0) for a in stage.augment]
        cbs += input_callbacks(cfg, mode="wave" if stage.wave_augment else "cache")
        self.cbs = sorted(cbs, key=lambda c: c.order) + [ChannelsLast()]
        self.dl = dls.train
        self.per_clip = aug if stage.wave_augment and not batched else None
        if self.per_clip is not None:  # decode without effects; the effects timed on their own
            self.dl.dataset.augment = None
        self.learn = _FakeLearner(dls)
        self.it = iter(self.dl)
        self.frames = []

    def step(self, now=time.perf_counter) -> tuple[float, ...]:
        t0 = now()
        try:
            xb, yb = _unpack(next(self.it))
        except StopIteration:
            self.it = iter(self.dl)
            t0 = now()
            xb, yb = _unpack(next(self.it))
        t1 = now()
        if self.per_clip is not None:  # as WaveDataset does: effects on a crop 1.25x as long, cut to the segment
            xb = (torch.stack([torch.from_numpy(_fit(self.per_clip(np.resize(w.numpy(), int(1.25 * len(w)))), len(w),
                                                     self.cfg)) for w in xb[0]]),)
        t2 = now()
        learn = self.learn
        learn.xb, learn.yb, learn.training = xb, (yb,), True
        with torch.no_grad():
            for cb in self.cbs:
                cb.learn = learn
                cb.before_batch()
        t3 = now()
        self.frames.append(learn.xb[0].shape[-1])
        self.opt.zero_grad(set_to_none=True)
        self.loss_fn(self.model(learn.xb[0]), learn.yb[0]).backward()
        self.opt.step()
        t4 = now()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3


class _FakeLearner:
    """What the input and augmentation callbacks read from a Learner: xb, yb, training, dls."""

    def __init__(self, dls):
        self.dls, self.xb, self.yb, self.training = dls, (), (), True


def _unpack(b):
    if len(b) == 3:  # cache path: (x float16, stats), y
        return (b[0], b[1]), b[2]
    return (b[0],), b[1]


def _fit(y: np.ndarray, n: int, cfg) -> np.ndarray:
    """A waveform extended (as the clip's extend mode) and cut to ``n`` samples."""
    from fatlib.audio import fix_length
    from fatlib.features import extend_mode

    y = fix_length(np.asarray(y, np.float32), min_samples=n, mode=extend_mode(len(y), cfg))
    return np.ascontiguousarray(y[:n])


def bench_fold(quick: bool, tmp: Path) -> None:
    steps = 3 if quick else 6
    split = _synth_data(tmp / "fold", 32 if quick else 64, 12.0, seed=1)
    third, ninety_fifth = _recipe_stage("3rd_place", **THIRD_PLACE), _recipe_stage("95th_place")
    runners = {"95th": _FoldRunner(ninety_fifth, split, tmp, batched=None),
               "3rd per-clip": _FoldRunner(third, split, tmp, batched=False),
               "3rd batched": _FoldRunner(third, split, tmp, batched=True)}
    for name in CLOCKS:
        results = {label: dict.fromkeys(_FoldRunner.PARTS, 0.0) for label in runners}
        with Clock(name) as clock:
            for i in range(steps + 1):  # the runners' steps interleaved; one warm-up step
                for label, runner in runners.items():
                    times = runner.step(clock.now)
                    if i >= 1:
                        for k, v in zip(_FoldRunner.PARTS, times):
                            results[label][k] += v
        for label, res in results.items():
            parts = ", ".join(f"{k} {v:.2f}" for k, v in res.items())
            frames = np.mean(runners[label].frames[-steps:])
            print(f"  [{label}, {clock.label}] {steps} steps: {parts} s (total {sum(res.values()):.2f} s; "
                  f"{frames:.0f} frames a segment)", flush=True)
        base = sum(results["95th"].values())
        for label in ("3rd per-clip", "3rd batched"):
            total = sum(results[label].values())
            split_s = " ".join(f"{k[:4]} {v:.1f}" for k, v in results[label].items())
            row(f"{label.replace('3rd', '3rd-place')} effects: fold time / 95th's at {steps} equal steps ({clock.label})",
                f"95th {base:.1f} s", f"{total:.1f} s ({split_s})", total / base,
                "goal <= 1.5x" if label == "3rd batched" else "")
        model_3rd, model_95th = results["3rd batched"]["model step"], results["95th"]["model step"]
        row(f"3rd-place model step alone / 95th's ({np.mean(runners['3rd batched'].frames[-steps:]):.0f} vs 258 frames "
            f"a segment; the floor of the ratio above; {clock.label})", f"95th {model_95th:.1f} s",
            f"3rd {model_3rd:.1f} s", model_3rd / model_95th)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (about 1-2 min on 2 CPU cores)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"--only: unknown {unknown}; choose from {list(PARTS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU (no GPU used here)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            print(f"[{part}]", flush=True)
            start = time.perf_counter()
            if part == "logmel":
                bench_logmel(args.quick)
            elif part == "fit":
                bench_fit(args.quick)
            elif part == "compile":
                bench_compile(args.quick)
            elif part == "workers":
                bench_workers(args.quick, Path(tmp))
            else:
                bench_fold(args.quick, Path(tmp))
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    widths = [max(len(r[i]) for r in ROWS + [("measure", "baseline", "candidate", "ratio", "goal")]) for i in range(5)]
    print()
    for r in [("measure", "baseline", "candidate", "ratio", "goal")] + ROWS:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
