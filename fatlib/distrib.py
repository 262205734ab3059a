"""The processes of one job started by ``torchrun`` or ``accelerate launch``: rank, world size,
barriers, and the two ways a stage uses them.

- data parallel (default): every process trains every fold together, fastai's ``DistributedTrainer``
  (accelerate, ``DistributedDataParallel``) averaging the gradients; the clips of a batch are split
  over the processes (``batch_size`` stays the clips per optimizer step);
- fold parallel (``StageConfig.fold_parallel``): process r trains folds r, r+W, ... on its own device,
  no gradient sync (Kaggle's two T4s: one fold per GPU).

Rank 0 alone writes what is shared (fold lists, caches, stage outputs); the others wait at a
barrier (``main_first``, ``barrier``) and read it after. With one process (no ``WORLD_SIZE`` > 1)
every function here is a no-op. Barriers run over a gloo group whose timeout is
``FATLIB_BARRIER_TIMEOUT_S`` seconds (default 6 h: a cache build on the full data set runs long
while the other processes wait); a crashed rank ends the whole job through torchrun anyway.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys

DEFAULT_BARRIER_TIMEOUT_S = 6 * 3600
_state = {"barrier_group": None}


def world_size() -> int:
    """Processes in the job (``WORLD_SIZE`` set by ``accelerate launch`` / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def use_distributed() -> bool:
    return world_size() > 1


def device():
    """This process's device: ``cuda:LOCAL_RANK`` on GPUs (cuda:0 alone), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def _timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("FATLIB_BARRIER_TIMEOUT_S", DEFAULT_BARRIER_TIMEOUT_S)))


def init() -> None:
    """Join the job's process group (env:// from torchrun / accelerate launch) once: nccl on GPUs,
    gloo on CPUs; accelerate and fastai then use this group. No-op with one process."""
    if not use_distributed():
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dev = device()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=_timeout())
    if _state["barrier_group"] is None:
        _state["barrier_group"] = (dist.group.WORLD if dist.get_backend() == "gloo"
                                   else dist.new_group(backend="gloo", timeout=_timeout()))


def barrier() -> None:
    """Wait until every process of the job reaches this point (no-op with one process)."""
    if not use_distributed():
        return
    import torch.distributed as dist

    init()
    dist.barrier(group=_state["barrier_group"])


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (building what the others then only read), the others after it."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def shutdown() -> None:
    """Leave the process group (end of a command); no-op when none was joined."""
    if "torch" not in sys.modules:  # no torch, no process group (and no import of torch just to say so)
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _state["barrier_group"] = None


@contextlib.contextmanager
def alone():
    """This process as a job of one while the block runs: fastai reads ``WORLD_SIZE`` / ``RANK`` from
    the environment (and would gather every batch's metrics over the processes), so a fold trained
    by one process of a fold-parallel job sets them to 1 / 0 and back afterwards."""
    saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK")}
    os.environ.update(WORLD_SIZE="1", RANK="0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def my_folds(folds: list[int], *, fold_parallel: bool) -> list[int]:
    """The folds this process trains: all of them (data parallel, or one process), or every
    W-th from its rank (fold parallel)."""
    if not fold_parallel or not use_distributed():
        return list(folds)
    return list(folds)[rank()::world_size()]


# ------------------------------------------------------------------------------- data parallel
def _trainer_class():
    import torch
    from fastai.distributed import DistributedDL, DistributedTrainer

    class _DL(DistributedDL):
        """fastai's DistributedDL broadcasts the shuffled order as a CUDA tensor; on gloo it must be on the CPU."""

        def _broadcast(self, t, rank):
            import torch.distributed as dist

            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor(t, dtype=torch.long, device=dev)
            dist.broadcast(t, rank)
            return t.cpu().tolist()

    class _Trainer(DistributedTrainer):
        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else _DL(dl, device=self.learn.model.device)

    return _Trainer


@contextlib.contextmanager
def data_parallel(learn):
    """fastai's ``Learner.distrib_ctx`` on any backend: the model in DistributedDataParallel
    (accelerate), each batch split over the processes, metrics gathered; SyncBatchNorm on GPUs
    (torch has none on CPU). Restores the plain model afterwards."""
    import fastai.distributed  # noqa: F401  (Learner.detach_distributed)
    from fastai.callback.progress import ProgressCallback

    init()
    on_cpu = device().type == "cpu"
    learn.add_cb(_trainer_class()(sync_bn=not on_cpu, cpu=on_cpu))
    if not is_main_process():
        learn.remove_cb(ProgressCallback)
    try:
        yield learn
    finally:
        learn.detach_distributed()
