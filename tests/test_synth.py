import filecmp

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fatlib.commands.main import main as cli_main
from fatlib.dataset import FatData, parse_labels
from fatlib.errors import DataError
from fatlib.synth import _SPLITS, FSD2019_CLASSES, _label_sets, _lengths_s, make_dataset, sound_class

SPLIT_DIRS = {"train_curated": 48, "train_noisy": 48, "test": 16}  # the tiny_dataset fixture's sizes


def test_layout_and_wav_format(tiny_dataset):
    for folder, n in SPLIT_DIRS.items():
        wavs = sorted((tiny_dataset / folder).glob("*.wav"))
        assert len(wavs) == n
        for wav in wavs[:5]:
            info = sf.info(wav)
            assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 1, "PCM_16", "WAV")
            assert 0.3 <= info.duration <= 3.0 + 1e-6
            y, _ = sf.read(wav)
            assert np.abs(y).max() > 0.01  # real sound, not silence
    sub = pd.read_csv(tiny_dataset / "sample_submission.csv")
    assert list(sub.columns) == ["fname", *FSD2019_CLASSES[:6]]
    assert (sub.iloc[:, 1:].to_numpy() == 0).all()
    test_labels = pd.read_csv(tiny_dataset / "test_labels.csv")
    assert list(test_labels.columns) == ["fname", "labels", "usage"]
    assert test_labels["fname"].tolist() == sub["fname"].tolist()
    assert set(test_labels["usage"]) == {"Public", "Private"}


def test_loads_with_fatdata(tiny_dataset):
    data = FatData.from_dir(tiny_dataset)
    assert data.vocab == list(FSD2019_CLASSES[:6])
    assert (len(data.curated), len(data.noisy), len(data.test)) == (48, 48, 16)
    assert data.curated.targets.shape == (48, 6) and data.test_targets.shape == (16, 6)
    assert (data.curated.targets.sum(1) >= 1).all()
    assert (data.test_usage == "Public").sum() == 4
    assert data.curated.targets.sum(0).min() >= 6  # balanced: every class about 48/6 times


def test_label_noise_rate_against_truth(tiny_dataset):
    given = pd.read_csv(tiny_dataset / "train_noisy.csv")
    truth = pd.read_csv(tiny_dataset / "noisy_truth.csv")
    assert given["fname"].tolist() == truth["fname"].tolist()
    wrong = [set(parse_labels(a)) != set(parse_labels(b)) for a, b in zip(given["labels"], truth["labels"])]
    assert sum(wrong) == round(0.3 * 48)
    assert (given["labels"] != "").all()  # a corrupted clip still has a label (training CSVs allow no empty field)


def test_same_seed_same_bytes(tmp_path):
    kw = dict(n_classes=4, n_curated=6, n_noisy=6, n_test=3, max_seconds=1.0)
    a = make_dataset(tmp_path / "a", seed=3, **kw)
    b = make_dataset(tmp_path / "b", seed=3, n_jobs=2, **kw)
    c = make_dataset(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 15 + 6  # wavs + 5 CSVs + synth.json
    assert sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) == files
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    assert not filecmp.cmp(a / "train_curated.csv", c / "train_curated.csv", shallow=False)


def test_lengths_and_multilabel_shares_follow_the_real_data():
    rng = np.random.default_rng(0)
    assert _lengths_s(4000, _SPLITS["curated"], None, rng).mean() == pytest.approx(7.6, abs=0.5)
    assert _lengths_s(4000, _SPLITS["noisy"], None, rng).mean() == pytest.approx(14.5, abs=0.5)
    assert _lengths_s(500, _SPLITS["noisy"], 2.5, rng).max() == 2.5
    for key, share in (("curated", 0.14), ("noisy", 0.16), ("test", 0.29)):
        sets = _label_sets(4000, 80, _SPLITS[key].multi_share, rng)
        assert np.mean([len(s) > 1 for s in sets]) == pytest.approx(share, abs=0.025)
        assert max(len(s) for s in sets) == 3 and all(len(set(s)) == len(s) for s in sets)


def test_all_80_classes_are_distinct():
    specs = [sound_class(k) for k in range(80)]
    assert len(set(specs)) == 80
    assert len({(s.family, s.f_lo_hz) for s in specs}) == 80


def _mean_log_mel(path):
    y, sr = sf.read(path)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=1024, n_mels=48)
    return librosa.power_to_db(mel).mean(axis=1)


def test_classes_are_learnable(tiny_dataset):
    """Nearest centroid on mean log-mel band energies: train on curated, test on the test split."""
    cur = pd.read_csv(tiny_dataset / "train_curated.csv")
    test = pd.read_csv(tiny_dataset / "test_labels.csv")
    vocab = list(FSD2019_CLASSES[:6])
    feats = np.stack([_mean_log_mel(tiny_dataset / "train_curated" / f) for f in cur["fname"]])
    labels = [parse_labels(s) for s in cur["labels"]]
    single = np.array([len(lab) == 1 for lab in labels])
    centroids = np.stack([feats[single & np.array([lab == [c] for lab in labels])].mean(0) for c in vocab])
    test_feats = np.stack([_mean_log_mel(tiny_dataset / "test" / f) for f in test["fname"]])
    dists = ((test_feats[:, None, :] - centroids[None]) ** 2).sum(-1)
    predicted = [vocab[i] for i in dists.argmin(1)]
    accuracy = np.mean([p in parse_labels(s) for p, s in zip(predicted, test["labels"])])
    assert accuracy >= 0.75  # chance is about 1/6 (a bit more with multi-label clips)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(DataError, match="n_classes"):
        make_dataset(tmp_path, n_classes=1)
    with pytest.raises(DataError, match="class_names"):
        make_dataset(tmp_path, n_classes=2, class_names=["a", "a"])
    with pytest.raises(DataError, match="noise_rate"):
        make_dataset(tmp_path, noise_rate=1.5)
    assert not any(tmp_path.iterdir())  # validated before anything is written


def test_custom_class_names_and_cli(tmp_path):
    names = ["Door_(slam)", "Hi-hat_x"]
    make_dataset(tmp_path / "named", n_classes=2, class_names=names, n_curated=4, n_noisy=2, n_test=2,
                 max_seconds=0.5)
    assert FatData.from_dir(tmp_path / "named").vocab == names
    rc = cli_main(["synth", str(tmp_path / "cli"), "--size", "tiny", "--n-classes", "3", "--n-curated", "4",
                   "--n-noisy", "2", "--n-test", "2", "--max-seconds", "0.5", "--seed", "1"])
    assert rc == 0
    data = FatData.from_dir(tmp_path / "cli")
    assert (len(data.vocab), len(data.curated), len(data.noisy), len(data.test)) == (3, 4, 2, 2)


def test_rerun_is_a_noop_and_foreign_data_is_never_overwritten(tmp_path):
    kw = dict(n_classes=3, n_curated=6, n_noisy=6, n_test=3, max_seconds=1.0, seed=1)
    out = make_dataset(tmp_path / "d", **kw)
    wav = next((out / "train_curated").glob("*.wav"))
    before = wav.stat().st_mtime_ns
    make_dataset(out, **kw)  # same parameters: nothing rewritten
    assert wav.stat().st_mtime_ns == before
    with pytest.raises(DataError, match="other parameters"):
        make_dataset(out, **{**kw, "seed": 2})
    user = tmp_path / "user"
    user.mkdir()
    (user / "train_curated.csv").write_text("fname,labels\nmine.wav,Bark\n")
    with pytest.raises(DataError, match="refusing to overwrite"):
        make_dataset(user, **kw)
    assert (user / "train_curated.csv").read_text() == "fname,labels\nmine.wav,Bark\n"
