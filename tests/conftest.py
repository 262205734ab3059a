"""Shared fixtures. The tiny synthetic data set is made once per test session (a few seconds)."""
from __future__ import annotations

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
