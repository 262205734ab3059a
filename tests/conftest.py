"""Shared fixtures. The tiny synthetic data set is made once per test session (a few seconds)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (real CSVs, six real clips); tests skip where it is absent."""
    if not (SHARED / "fsdkaggle2019" / "train_curated.csv").exists():
        pytest.skip("../shared is absent (only the project's own CI machine has it)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A tiny FSDKaggle2019-format data set: 6 classes, short clips, label noise in the noisy split."""
    from fatlib.synth import make_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    return make_dataset(
        root, n_classes=6, n_curated=48, n_noisy=48, n_test=16, noise_rate=0.3, max_seconds=3.0, seed=0
    )


@pytest.fixture(scope="session")
def tiny_mel():
    """Small, fast log-mel settings for tests (32 mels, 32-frame crops)."""
    from fatlib.features import get_preset

    return get_preset("cnn128", n_mels=32, n_fft=1024, hop_length=512, crop_frames=32)


@pytest.fixture(scope="session")
def dep_wheels(tmp_path_factory) -> Path:
    """The dependency wheels a fatlib Kaggle dataset ships (fatlib.kaggle.DEPENDENCIES), fetched once with
    ``pip download`` from the package index, as scripts/setup_venv.sh does; builds then use them offline."""
    from fatlib.kaggle import download_dependency_wheels

    dest = tmp_path_factory.mktemp("dep_wheels")
    download_dependency_wheels(dest)
    return dest


# The slowest test files first (seconds on 2 quiet cores, one process), so that under pytest-xdist
# (`make test`: -n 2 --dist loadfile --no-loadscope-reorder) the long ones overlap the many short ones
# instead of one worker finishing alone at the end. Other files follow in their usual order.
SLOW_FILES_FIRST = ["test_notebooks.py", "test_engine.py", "test_cache_concurrency.py", "test_train.py", "test_logs.py",
                    "test_demo.py", "test_distrib.py", "test_tag.py", "test_hostile.py", "test_report.py",
                    "test_explore.py", "test_kaggle.py", "test_plan.py", "test_gpu_check.py"]


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the usual order
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: same order within a file
