"""Run every benchmark in turn (``make bench``; ``--quick`` passes through): each prints its own
ratios against a baseline measured in the same run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_features.py", "bench_models.py", "bench_augment.py", "bench_train.py", "bench_device_path.py",
           "bench_predict.py",
           "bench_predict_memory.py",
           "bench_synth.py"]


def main(argv: list[str]) -> int:
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} {' '.join(argv)}", flush=True)
        if subprocess.call([sys.executable, str(HERE / name), *argv]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
