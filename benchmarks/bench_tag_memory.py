"""Peak memory of ``python -m fatlib tag --timeline`` against ``python -m fatlib predict`` on the same
long recording (one test clip), each the real command in a child process (``ru_maxrss`` from
``os.wait4``), ``--device cpu``. ``--before DIR``: also predict from another checkout (e.g. the main
branch, before long clips were streamed), for the comparison. Model: CNN-model-1 (``--width-mult``)
with random weights saved like a trained fold, ``cnn128`` features, windows TTA.

    .venv/bin/python benchmarks/bench_tag_memory.py [--minutes 10 60] [--step-frames 48] [--before /work/main]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict_memory import make_data, make_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak(cmd: list[str], root: Path, log: Path) -> tuple[float, float]:
    """(peak RSS MiB, wall seconds) of ``python -m fatlib <cmd>`` with ``root`` first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    with open(log, "w") as f:
        child = subprocess.Popen([sys.executable, "-m", "fatlib", *cmd], stdout=f, stderr=subprocess.STDOUT, env=env,
                                 cwd=root)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:1])} failed: see {log}\n" + log.read_text()[-2000:])
    return usage.ru_maxrss / 1024.0, time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0], help="recording lengths")
    ap.add_argument("--step-frames", type=int, default=48, help="windows TTA step (both commands)")
    ap.add_argument("--width-mult", type=float, default=0.125, help="CNN-model-1 width (1.0 = published)")
    ap.add_argument("--before", type=Path, default=None, help="another checkout to run predict from")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = make_weights(work, width_mult=args.width_mult)
        print(f"one recording, windows TTA every {args.step_frames} frames, CNN-model-1 x{args.width_mult:g}, "
              "cnn128 features, --device cpu; peak RSS MiB (wall s)")
        for m in args.minutes:
            data = make_data(work / f"m{m:g}", short_clips=0, minutes=[m])[m]
            rec = next((data / "test").glob("long_*.wav"))
            step = ["--step-frames", str(args.step_frames), "--device", "cpu"]
            rows = [("predict", peak(["predict", "--data", str(data), "--weights", str(weights), *step,
                                      "--out", str(work / "sub.csv")], ROOT, work / "predict.log"))]
            if args.before:
                rows.append((f"predict ({args.before})", peak(["predict", "--data", str(data), "--weights",
                                                              str(weights), *step, "--out", str(work / "sub0.csv")],
                                                             args.before, work / "before.log")))
            rows.append(("tag --timeline", peak(["tag", "--weights", str(weights), *step, "--timeline",
                                                  "--out", str(work / "tags.csv"), str(rec)], ROOT, work / "tag.log")))
            print(f"{m:g} min: " + "; ".join(f"{name} {rss:.0f} ({sec:.0f} s)" for name, (rss, sec) in rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
