"""Peak memory of ``python -m fatlib predict`` with one long clip among short ones, measured on the
real command in a child process (its own ``VmHWM``: tests/_rss.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from _rss import fatlib_peak_rss

SR = 44100
VOCAB = ["Bark", "Meow", "Purr"]
LONG_SECONDS = 120
# Padding the 13 clips of the chunk to the 2-minute one (the old behaviour) needs over 2 GB for the
# waveforms and their STFT alone; grouped by length the run stays near the cost of the short clips.
PEAK_RSS_BOUND_MIB = 1100


def _clip(path: Path, seconds: float, rng) -> None:
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")


def test_peak_rss_with_one_long_clip_stays_bounded(tmp_path):
    import torch

    from fatlib.checkpoint import save_weights
    from fatlib.features import get_preset
    from fatlib.models import create_model

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "train_curated").mkdir()
    _clip(data / "train_curated" / "t.wav", 1.0, rng)
    pd.DataFrame({"fname": ["t.wav"], "labels": ["Bark"]}).to_csv(data / "train_curated.csv", index=False)
    names = [f"s{i}.wav" for i in range(12)] + ["long.wav"]
    for name in names[:-1]:
        _clip(data / "test" / name, rng.uniform(0.5, 3.0), rng)
    _clip(data / "test" / "long.wav", LONG_SECONDS, rng)
    pd.DataFrame({"fname": names, **{c: 0 for c in VOCAB}}).to_csv(data / "sample_submission.csv", index=False)
    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=len(VOCAB), width_mult=0.125)
    save_weights(tmp_path / "w" / "fold0.safetensors", model, model_name="cnn_model_1",
                 model_kwargs=model.fatlib_kwargs, mel_config=get_preset("cnn128").to_dict(), vocab=VOCAB)
    out = tmp_path / "submission.csv"
    code, output, peak_mib = fatlib_peak_rss(["predict", "--data", data, "--weights", tmp_path / "w", "--device", "cpu",
                                              "--out", out])
    assert code == 0, output
    sub = pd.read_csv(out)
    assert sub["fname"].tolist() == names and np.isfinite(sub[VOCAB].to_numpy()).all()
    assert peak_mib < PEAK_RSS_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB with one {LONG_SECONDS} s clip"
    print(f"peak RSS {peak_mib:.0f} MiB")
