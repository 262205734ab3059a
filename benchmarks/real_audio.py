"""Real-audio benchmark: fatlib from scratch against baselines measured in the same run, on real recordings.

The data set (``benchmarks/real_audio_data.py``: drum kits, tabla, keyboard, voices, birds from Debian
packages, split by recording source, test mixtures of 2-3 clips) is built once into ``--data-dir``.
Then, on the same split:

- ``random``: a random ranking (the floor);
- ``mfcc-logreg``: MFCC (20 coefficients, mean and std over frames) + standardisation + logistic regression;
- ``fatlib``: the default command a user types, ``python -m fatlib train-stage --run real`` (plus any
  ``--fatlib-args``), then ``python -m fatlib predict``, both in a subprocess, timed.

Reported: test lwlrap, top-1 accuracy on single-label test clips, lwlrap on the single clips and on the
mixtures, training minutes, and fatlib's error (1 - lwlrap) as a ratio of the MFCC baseline's. The
learning curve (validation lwlrap of every fold against epochs and minutes) goes to ``curve.png``,
every figure to ``results.json`` and ``results.md`` in ``--out``.

    python benchmarks/real_audio.py                      # build once (root; apt-get update first), then run
    python benchmarks/real_audio.py --fatlib-args "--epochs 40" --tag e40
    python benchmarks/real_audio.py --skip-fatlib        # baselines only
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))


def _truth(data_dir: Path, vocab: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    tl = pd.read_csv(data_dir / "test_labels.csv", keep_default_na=False)
    y = np.zeros((len(tl), len(vocab)), np.float32)
    col = {c: i for i, c in enumerate(vocab)}
    for r, labels in enumerate(tl["labels"]):
        for lab in labels.split(","):
            y[r, col[lab]] = 1
    return tl, y


def score(tl: pd.DataFrame, y: np.ndarray, scores: np.ndarray) -> dict:
    """lwlrap on all test clips, on single clips and on mixtures; top-1 on single-label clips."""
    from fatlib.metrics import lwlrap

    single = (tl["kind"] == "single").to_numpy()
    top1 = float(np.mean(y[single, scores[single].argmax(1)] == 1))
    return {"lwlrap": lwlrap(y, scores), "lwlrap_single": lwlrap(y[single], scores[single]),
            "lwlrap_mixture": lwlrap(y[~single], scores[~single]) if (~single).any() else float("nan"),
            "top1_single": top1}


# -------------------------------------------------------------------------------------- baselines
def mfcc_features(paths, *, sample_rate: int = 44100, n_mfcc: int = 20) -> np.ndarray:
    import librosa

    from fatlib.audio import load_audio

    feats = []
    for p in paths:
        m = librosa.feature.mfcc(y=load_audio(p, sample_rate=sample_rate), sr=sample_rate, n_mfcc=n_mfcc)
        feats.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    return np.stack(feats)


def mfcc_logreg(data_dir: Path, vocab: list[str], test_fnames: list[str]) -> tuple[np.ndarray, float]:
    """Scores of MFCC mean/std + logistic regression (one class per training clip: all are single-label)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    cur = pd.read_csv(data_dir / "train_curated.csv", keep_default_na=False)
    x_train = mfcc_features([data_dir / "train_curated" / f for f in cur["fname"]])
    y_train = np.array([vocab.index(lab.split(",")[0]) for lab in cur["labels"]])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x_train, y_train)
    train_s = time.perf_counter() - start
    proba = clf.predict_proba(mfcc_features([data_dir / "test" / f for f in test_fnames]))
    scores = np.zeros((len(test_fnames), len(vocab)), np.float32)
    scores[:, clf.classes_] = proba
    return scores, train_s


# ------------------------------------------------------------------------------------------ fatlib
def run_fatlib(data_dir: Path, work: Path, extra: list[str], *, log) -> dict:
    """The default command in a subprocess: train-stage, then predict; returns timings and paths."""
    py = sys.executable
    weights, cache = work / "weights", work / "cache"
    train = [py, "-m", "fatlib", "train-stage", "--data", str(data_dir), "--run", "real",
             "--weights", str(weights), "--cache-dir", str(cache), *extra]
    log(f"$ {shlex.join(train)}")
    start, cpu0 = time.perf_counter(), _children_cpu_s()
    with open(work / "train.log", "w") as f:
        subprocess.run(train, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    train_s, train_cpu_s = time.perf_counter() - start, _children_cpu_s() - cpu0
    stage_dir = next(p.parent for p in sorted((weights / "real").glob("*/config.json")))
    sub = work / "submission.csv"
    pred = [py, "-m", "fatlib", "predict", "--data", str(data_dir), "--weights", str(stage_dir), "--out", str(sub)]
    log(f"$ {shlex.join(pred)}")
    start = time.perf_counter()
    with open(work / "predict.log", "w") as f:
        subprocess.run(pred, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return {"train_s": train_s, "train_cpu_s": train_cpu_s, "predict_s": time.perf_counter() - start,
            "stage_dir": stage_dir, "submission": sub}


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of finished child processes: with other work on the machine, the
    training's CPU seconds / 2 is what it takes on 2 free cores (wall time then overstates it)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def learning_curve(stage_dir: Path) -> list[dict]:
    """Per fold, per epoch: valid lwlrap and the minutes since the fold started (from fold*.json)."""
    rows = []
    for path in sorted(stage_dir.glob("fold*.json")):
        rec = json.loads(path.read_text())
        elapsed = 0.0
        for e, ep in enumerate(rec["history"]["epochs"]):
            elapsed += ep.get("seconds") or 0.0
            rows.append({"fold": rec["fold"], "epoch": e + 1, "valid_lwlrap": ep.get("lwlrap"),
                         "valid_loss": ep.get("valid_loss"), "minutes": elapsed / 60})
    return rows


def plot_curve(rows: list[dict], path: Path, *, baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for fold, g in df.groupby("fold"):
        axes[0].plot(g["epoch"], g["valid_lwlrap"], marker=".", label=f"fold {fold}")
        axes[1].plot(g["minutes"], g["valid_lwlrap"], marker=".", label=f"fold {fold}")
    for ax, xl in zip(axes, ("epoch", "minutes since the fold started")):
        ax.axhline(baseline, color="k", ls="--", lw=1, label="MFCC + logreg (test)")
        ax.set_xlabel(xl)
        ax.set_ylabel("validation lwlrap")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("fatlib on real recordings: learning curve per fold")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    from real_audio_data import build_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=ROOT / "cache" / "real_audio" / "data",
                   help="where the data set is built once (default: cache/real_audio/data)")
    p.add_argument("--packages-dir", type=Path, default=ROOT / "cache" / "real_audio" / "debs",
                   help="downloaded and unpacked Debian packages (default: cache/real_audio/debs)")
    p.add_argument("--out", type=Path, default=ROOT / "cache" / "real_audio" / "runs", help="results folder")
    p.add_argument("--tag", default="default", help="name of this fatlib run (sub-folder of --out)")
    p.add_argument("--fatlib-args", default="", help="extra train-stage options (default: none, the defaults)")
    p.add_argument("--skip-fatlib", action="store_true", help="baselines only")
    p.add_argument("--seed", type=int, default=0, help="data set split seed")
    args = p.parse_args(argv)

    manifest = build_dataset(args.data_dir, packages_dir=args.packages_dir, seed=args.seed)
    vocab = manifest["vocab"]
    print(f"data: {manifest['n_train']} training clips, {manifest['n_test_single']} single + "
          f"{manifest['n_test_mixture']} mixed test clips, {len(vocab)} labels ({', '.join(vocab)})")
    tl, y = _truth(args.data_dir, vocab)
    results = {"data": {k: manifest[k] for k in ("n_train", "n_test_single", "n_test_mixture", "vocab", "groups")}}
    rng = np.random.default_rng(0)
    results["random"] = score(tl, y, rng.random(y.shape))
    mf, mf_s = mfcc_logreg(args.data_dir, vocab, tl["fname"].tolist())
    results["mfcc-logreg"] = {**score(tl, y, mf), "train_minutes": mf_s / 60}
    if not args.skip_fatlib:
        work = args.out / args.tag
        if work.exists():
            raise SystemExit(f"{work} exists: pass another --tag or delete it")
        work.mkdir(parents=True)
        run = run_fatlib(args.data_dir, work, shlex.split(args.fatlib_args), log=print)
        sub = pd.read_csv(run["submission"]).set_index("fname").loc[tl["fname"], vocab].to_numpy(np.float32)
        res = score(tl, y, sub)
        res["train_minutes"] = run["train_s"] / 60
        res["train_cpu_minutes"] = run["train_cpu_s"] / 60  # / 2: minutes on 2 free cores
        res["predict_minutes"] = run["predict_s"] / 60
        res["error_ratio_vs_mfcc"] = (1 - res["lwlrap"]) / (1 - results["mfcc-logreg"]["lwlrap"])
        res["args"] = args.fatlib_args
        res["config"] = json.loads((run["stage_dir"] / "config.json").read_text())
        curve = learning_curve(run["stage_dir"])
        res["curve"] = curve
        results["fatlib"] = res
        plot_curve(curve, work / "curve.png", baseline=results["mfcc-logreg"]["lwlrap"])
        out = work
    else:
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    lines = ["| method | test lwlrap | single lwlrap | mixture lwlrap | top-1 single | train min | train CPU min | "
             "error / MFCC's |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base_err = 1 - results["mfcc-logreg"]["lwlrap"]
    for name in ("random", "mfcc-logreg", "fatlib"):
        r = results.get(name)
        if r:
            lines.append(f"| {name} | {r['lwlrap']:.3f} | {r['lwlrap_single']:.3f} | {r['lwlrap_mixture']:.3f} | "
                         f"{r['top1_single']:.3f} | {r.get('train_minutes', 0):.1f} | "
                         f"{r.get('train_cpu_minutes', r.get('train_minutes', 0)):.1f} | {(1 - r['lwlrap']) / base_err:.2f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
