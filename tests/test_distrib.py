"""Two CPU processes (torchrun, gloo) through stage1 (fold parallel) and stage2 (data parallel) of the
warm-up on the tiny data set, against the same two stages in one process.

One launch serves every test here (each launch pays the imports of torch and fastai twice):
- stage1 with ``fold_parallel``: process r trains fold r alone, with the seed and data one process
  would use, so its out-of-fold predictions equal the one-process run's up to float rounding (1e-4);
- stage2 data parallel (DistributedDataParallel over gloo; keeping the best epoch): each batch is split over the two
  processes and BatchNorm statistics are per process (torch has no SyncBatchNorm on CPU), so the
  training steps differ slightly from one process: out-of-fold probabilities within 0.05 of it
  (measured: stage1 identical, stage2 at most 0.009 apart, the same CV lwlrap).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(model_kwargs={"width_mult": 0.125}, mel=dict(n_mels=32, n_fft=2048, hop_length=1024, crop_frames=32),
            epochs=2, n_folds=2, batch_size=8, tta_step_frames=32, cache_jobs=1, auto_scale=False, n_workers=0)
TOL_FOLD_PARALLEL = 1e-4  # same computation in another process: float rounding only
TOL_DATA_PARALLEL = 0.05  # split batches, per-process BatchNorm statistics

# what a user's script launched with `torchrun --nproc_per_node 2 script.py` does
SCRIPT = """
import json, sys
from fatlib import distrib
from fatlib.dataset import FatData
from fatlib.pipeline import warmup_stage

data_dir, weights, cache, kw = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
data = FatData.from_dir(data_dir)
r1 = warmup_stage("stage1", data, run="r", weights_root=weights, cache_dir=cache, progress=False,
                  fold_parallel=True, **kw)
r2 = warmup_stage("stage2", data, run="r", weights_root=weights, cache_dir=cache, progress=False, keep="best", **kw)
# then the command line's `run` in the same processes (python -m fatlib run ... under torchrun); last, as the
# command leaves the process group when it ends
from fatlib.commands.main import main

rank, world = distrib.rank(), distrib.world_size()
sets = [a for s in json.loads(sys.argv[5]) for a in ("--set", s)]
rc = main(["run", "95th_place", "--data", data_dir, "--weights", weights, "--run", "run95", "--cache-dir", cache,
           "--quiet", *sets])
with open(f"{weights}/returned-{rank}.json", "w") as f:
    json.dump({"rank": rank, "world": world, "stage1": r1 is not None, "stage2": r2 is not None, "run": rc}, f)
"""
# `fatlib run 95th_place` on the same data, fold parallel (so it equals the one-process run up to rounding)
RUN_SETS = ["epochs=1", "n_folds=2", "auto_scale=false", "model_kwargs.width_mult=0.125", 'preset="cnn128"',
            "mel.crop_frames=32", "mel.n_mels=32", "batch_size=8", "cache_jobs=1", "n_workers=0", "fold_parallel=true"]


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """(two-process weights root, one-process weights root, files of the cache folder)."""
    root = tmp_path_factory.mktemp("distrib")
    script = root / "two_stages.py"
    script.write_text(SCRIPT)
    # one thread per process: comparable runs, and no threads spinning against each other on 2 cores
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    if sys.platform.startswith("linux"):  # gloo on loopback, whatever the container's host name resolves to
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for launch, weights in (([*_torchrun(), "--standalone", "--nproc_per_node", "2"], root / "w2"),
                            ([sys.executable], root / "w1")):  # the reference: one process, the same script
        weights.mkdir()
        cmd = [*launch, str(script), str(tiny_dataset), str(weights), str(root / "cache"), json.dumps(TINY),
               json.dumps(RUN_SETS)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=root)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        if weights.name == "w2":  # before the reference run opens them
            caches = sorted(p.name for p in (root / "cache").iterdir())
    return root / "w2", root / "w1", caches


def _oof(run_dir: Path, stage: str) -> np.ndarray:
    return pd.read_csv(run_dir / stage / "oof_curated.csv").drop(columns=["fname"]).to_numpy()


@pytest.mark.slow
def test_two_processes_finish_every_stage_with_one_cache(runs):
    two, _, caches = runs
    results = [json.loads((two / f"returned-{r}.json").read_text()) for r in range(2)]
    # rank 0 returns the stage results, rank 1 None, both only after the stage was written
    assert results == [{"rank": 0, "world": 2, "stage1": True, "stage2": True, "run": 0},
                       {"rank": 1, "world": 2, "stage1": False, "stage2": False, "run": 0}]
    # one build of each cache (curated, noisy; test for the run's predictions): a data file and its metadata
    assert len(caches) >= 4 and sum(n.endswith(".f16") for n in caches) == len(caches) // 2, caches
    assert not [n for n in caches if n.endswith((".lock", ".tmp"))]
    for stage in ("stage1", "stage2"):
        d = two / "r" / stage
        assert (d / "metrics.json").is_file() and (d / "oof_curated.csv").is_file()
        assert all((d / f"fold{k}.done").exists() for k in range(2))
        assert not list(d.glob("*.tmp"))


def _compare(runs, stage: str) -> tuple[str, float, Path, Path]:
    """The 2-process run's log of ``stage``, the largest out-of-fold difference to the 1-process run,
    and both run folders."""
    two, one = runs[0] / "r", runs[1] / "r"
    diff = float(np.abs(_oof(two, stage) - _oof(one, stage)).max())
    return (two / stage / "log.txt").read_text(), diff, two, one


@pytest.mark.slow
def test_fold_parallel_trains_each_fold_once_as_one_process_would(runs):
    log, diff, _, _ = _compare(runs, "stage1")
    assert "2 processes, fold parallel" in log
    for k in (1, 2):
        assert log.count(f"stage1 fold {k}/2: training") == 1, log
        assert log.count(f"stage1 fold {k}/2 done") == 1, log
    assert diff <= TOL_FOLD_PARALLEL, diff


@pytest.mark.slow
def test_data_parallel_predictions_close_to_one_process(runs):
    log, diff, two, one = _compare(runs, "stage2")
    assert "2 processes, data parallel" in log
    assert log.count("stage2 fold 1/2: training") == 1  # rank 0 alone writes the log
    assert diff <= TOL_DATA_PARALLEL, diff
    m2 = json.loads((two / "stage2" / "metrics.json").read_text())
    m1 = json.loads((one / "stage2" / "metrics.json").read_text())
    assert abs(m2["cv_lwlrap_curated"] - m1["cv_lwlrap_curated"]) <= 0.1


def test_one_process_needs_no_process_group(monkeypatch):
    from fatlib import distrib

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distrib.use_distributed() and distrib.is_main_process()
    distrib.barrier()  # no-op
    with distrib.main_first():
        pass
    assert distrib.my_folds([0, 1, 2], fold_parallel=True) == [0, 1, 2]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distrib.my_folds([0, 1, 2, 3, 4], fold_parallel=True) == [1, 3]
    assert distrib.my_folds([0, 1, 2], fold_parallel=False) == [0, 1, 2]



def test_fold_parallel_from_the_command_line():
    from fatlib.commands.main import build_parser
    from fatlib.commands.options import config_from_args, stage_overrides
    from fatlib.pipeline import STAGES

    parser = build_parser()
    args = parser.parse_args(["train-stage", "--run", "r", "--fold-parallel"])
    assert config_from_args(args).fold_parallel is True
    assert config_from_args(parser.parse_args(["train-stage", "--run", "r"])).fold_parallel is False
    args = parser.parse_args(["warmup", "--run", "r", "--fold-parallel", "--stage", STAGES[0]])
    assert stage_overrides(args)["fold_parallel"] is True


@pytest.mark.slow
def test_run_command_under_torchrun_matches_one_process(runs):
    """`fatlib run RECIPE` in a 2-process torchrun job (fold parallel) finishes on every process, rank 0 writes
    the run's files once, and the stages' metrics equal the one-process run's (same folds, seeds and data)."""
    two, one = (pd.read_csv(w / "run95" / "stages.csv") for w in runs[:2])
    pd.testing.assert_frame_equal(two, one, check_exact=False, atol=TOL_FOLD_PARALLEL)
    steps = json.loads((runs[0] / "run95" / "steps.json").read_text())["steps"]
    assert steps == ["train curated", "ensemble", "predict", "report"]
    assert (runs[0] / "run95" / "submission.csv").exists() and (runs[0] / "run95" / "report.md").exists()
    assert "2 processes, fold parallel" in (runs[0] / "run95" / "curated" / "log.txt").read_text()
