"""``make bench``: issue 21's ratios in one run, printed as one table with the baseline beside each
(``bench_ratios.py``: LogMel vs librosa, fatlib's fit vs a plain loop, DataLoader workers, torch.compile,
the 3rd-place fold vs the 95th's split into decode / effects / features / model step).

    python benchmarks/run_all.py             # the one table (``--quick``, ``--only`` pass through)
    python benchmarks/run_all.py --all       # then every other benchmark script, each with its own ratios
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN = "bench_ratios.py"
SCRIPTS = ["bench_features.py", "bench_models.py", "bench_augment.py", "bench_train.py", "bench_device_path.py",
           "bench_predict.py",
           "bench_predict_memory.py",
           "bench_synth.py"]


def main(argv: list[str]) -> int:
    run_all = "--all" in argv
    argv = [a for a in argv if a != "--all"]
    failed = []
    for name in [MAIN] + (SCRIPTS if run_all else []):
        args = argv if name == MAIN else [a for a in argv if a == "--quick"]
        print(f"\n=== {name} {' '.join(args)}", flush=True)
        if subprocess.call([sys.executable, str(HERE / name), *args]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
