"""Bad input end to end: broken audio, broken CSVs and mismatched weights stop the pipeline with a
fatlib error that names the file and the fix, at the first step that can see the problem. Nothing is
replaced by silence: no cache index, weights or submission is written for a data set with a bad clip.

A 48 kHz stereo clip is not bad input: it is downmixed and resampled.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from fatlib.cache import FeatureCache
from fatlib.checkpoint import save_weights
from fatlib.commands import main as cli
from fatlib.dataset import FatData
from fatlib.errors import AudioError, DataError, WeightsError
from fatlib.features import clip_features, get_preset, log_mel
from fatlib.models import create_model
from fatlib.predict import predict_test

SR = 44100
MEL = dict(n_mels=32, n_fft=1024, hop_length=512, crop_frames=32)


def _garbage(path):
    path.write_bytes(b"RIFF\x00\x00not a wave file" * 8)


def _empty(path):
    sf.write(path, np.zeros(0, np.float32), SR)


def _header_only(path):
    """Truncated after the 44-byte header: the header promises samples the file no longer holds."""
    path.write_bytes(path.read_bytes()[:44])


def _nan(path):
    y, _ = sf.read(path, dtype="float32")
    y[len(y) // 2] = np.nan
    sf.write(path, y, SR, subtype="FLOAT")


# corruption -> words of the fix that the AudioError must contain
CORRUPTIONS = {
    "garbage": (_garbage, "re-encode it"),
    "empty": (_empty, "0 samples; replace it"),
    "header_only": (_header_only, "truncated: its header says"),
    "nan": (_nan, "NaN or infinite; re-export"),
}


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    from fatlib.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("clean") / "data", n_classes=3, n_curated=12, n_noisy=6,
                        n_test=4, max_seconds=1.0, seed=3)


@pytest.fixture
def root(clean_root, tmp_path):
    """A fresh copy of the clean data set, to corrupt."""
    return shutil.copytree(clean_root, tmp_path / "data")


@pytest.fixture(scope="module")
def mel():
    return get_preset("cnn128", **MEL)


def _assert_names(err, *parts):
    msg = str(err.value)
    for part in parts:
        assert part in msg, f"{part!r} not in the error message:\n{msg}"


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cache_build_stops_at_bad_clip(root, mel, tmp_path, kind, n_jobs):
    corrupt, fix = CORRUPTIONS[kind]
    data = FatData.from_dir(root)  # only the CSVs and file presence are checked here
    bad = data.curated.paths()[5]
    corrupt(bad)
    with pytest.raises(AudioError) as err:
        FeatureCache.build(data.curated.paths(), mel, cache_dir=tmp_path / "cache", name="curated",
                           n_jobs=n_jobs, progress=False)
    _assert_names(err, str(bad), fix)
    assert not list((tmp_path / "cache").glob("*.json")), "no cache index may exist for a split with a bad clip"


def test_48khz_stereo_clip_is_downmixed_and_resampled(root, mel, tmp_path):
    import librosa

    data = FatData.from_dir(root)
    path = data.curated.paths()[0]
    y, _ = sf.read(path, dtype="float32")
    reference = clip_features(y, mel)
    y48 = librosa.resample(y, orig_sr=SR, target_sr=48000)
    sf.write(path, np.stack([y48, 0.5 * y48], axis=1), 48000)  # two different channels: mean = 0.75 y
    cache = FeatureCache.build(data.curated.paths(), mel, cache_dir=tmp_path / "cache", n_jobs=1, progress=False)
    got = np.asarray(cache[0], dtype=np.float32)
    assert got.shape[0] == mel.n_mels and abs(got.shape[1] - reference.shape[1]) <= 1
    n = min(got.shape[1], reference.shape[1])
    expected = reference[:, :n] + 20 * np.log10(0.75)  # the downmix is 0.75 y: -2.5 dB everywhere
    loud = expected > expected.max() - 40  # compare where the clip is, not the resampler's floor
    assert np.median(np.abs(got[:, :n][loud] - expected[loud])) < 0.5
    assert got.max() > reference.max() - 10  # not silence


def test_csv_problems_are_reported_together(root):
    cur_csv = root / "train_curated.csv"
    lines = cur_csv.read_text().splitlines()
    fname_dup = lines[2].split(",")[0]
    lines.append(lines[2])  # duplicate fname
    lines[3] = lines[3].split(",")[0] + ',"Not_a_class"'  # unknown label
    fname_missing = lines[4].split(",")[0]
    cur_csv.write_text("\n".join(lines) + "\n")
    (root / "train_curated" / fname_missing).unlink()
    with pytest.raises(DataError) as err:
        FatData.from_dir(root)
    _assert_names(err, str(cur_csv), fname_dup, "keep one row per clip", "Not_a_class", "fix the spelling",
                  fname_missing, "copy the missing wav files")


def test_missing_test_clip_is_named(root):
    fname = next((root / "test").glob("*.wav"))
    fname.unlink()
    with pytest.raises(DataError) as err:
        FatData.from_dir(root)
    _assert_names(err, fname.name, str(root / "test"), "copy the missing wav files")


def test_train_stage_command_stops_at_bad_clip(root, tmp_path, capsys):
    import json

    data = FatData.from_dir(root)
    bad = data.curated.paths()[7]
    _garbage(bad)
    code = cli.main([
        "train-stage", "--data", str(root), "--run", "r", "--weights", str(tmp_path / "w"),
        "--cache-dir", str(tmp_path / "cache"), "--stage", "s1", "--n-folds", "2", "--epochs", "1", "--no-auto-scale",
        "--mel", json.dumps(MEL), "--model-kwargs", '{"width_mult": 0.125}', "--quiet",
    ])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and str(bad) in err and "re-encode it" in err
    assert not list((tmp_path / "w").rglob("*.safetensors"))


def _save_stage(weights_dir, mel, vocab, *, n_classes=None, kwargs_n_classes=None):
    """A one-fold stage folder with an untrained tiny model (what predict needs)."""
    n = len(vocab) if n_classes is None else n_classes
    model = create_model("cnn_model_1", n_classes=n, in_channels=mel.channels, width_mult=0.125)
    path = weights_dir / "run" / "s1" / "fold0.safetensors"
    kwargs = {"n_classes": n if kwargs_n_classes is None else kwargs_n_classes, "in_channels": mel.channels,
              "width_mult": 0.125}
    save_weights(path, model, model_name="cnn_model_1", model_kwargs=kwargs, mel_config=mel.to_dict(), vocab=vocab)
    return path


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_predict_stops_at_bad_test_clip(root, mel, tmp_path, kind):
    corrupt, fix = CORRUPTIONS[kind]
    data = FatData.from_dir(root)
    _save_stage(tmp_path / "w", mel, data.vocab)
    bad = data.test.paths()[2]
    corrupt(bad)
    out = tmp_path / "submission.csv"
    with pytest.raises(AudioError) as err:
        predict_test(data, tmp_path / "w" / "run", out=out, batch_size=2, device="cpu", num_workers=1)
    _assert_names(err, str(bad), fix)
    assert not out.exists()


def test_predict_clean_data_works(root, mel, tmp_path):
    """The control for the tests above: the same weights and data without corruption predict fine."""
    data = FatData.from_dir(root)
    _save_stage(tmp_path / "w", mel, data.vocab)
    out = tmp_path / "submission.csv"
    result = predict_test(data, tmp_path / "w" / "run", out=out, batch_size=2, device="cpu", num_workers=1)
    assert out.exists() and result["n_models"] == 1


def test_weights_of_another_vocabulary_are_refused(root, mel, tmp_path):
    data = FatData.from_dir(root)
    other = [*data.vocab[:-1], "Some_other_class"]
    path = _save_stage(tmp_path / "w", mel, other)
    out = tmp_path / "submission.csv"
    with pytest.raises(WeightsError) as err:
        predict_test(data, tmp_path / "w" / "run", out=out, device="cpu")
    _assert_names(err, str(path), "vocabulary mismatch", "Some_other_class", "Use weights trained on this data set")
    assert not out.exists()


def test_weights_that_do_not_fit_their_model_are_refused(root, mel, tmp_path):
    data = FatData.from_dir(root)
    # the metadata says 4 classes, the tensors hold a 3-class head
    path = _save_stage(tmp_path / "w", mel, data.vocab, kwargs_n_classes=len(data.vocab) + 1)
    with pytest.raises(WeightsError) as err:
        predict_test(data, tmp_path / "w" / "run", out=tmp_path / "submission.csv", device="cpu")
    _assert_names(err, str(path), "do not fit", "shape mismatch")


def test_log_mel_refuses_empty_wave():
    with pytest.raises(AudioError, match="empty"):
        log_mel(np.zeros(0, np.float32), get_preset("cnn128", **MEL))


def test_truncated_weights_file_is_named(root, mel, tmp_path):
    data = FatData.from_dir(root)
    path = _save_stage(tmp_path / "w", mel, data.vocab)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError) as err:
        predict_test(data, tmp_path / "w" / "run", out=tmp_path / "submission.csv", device="cpu")
    _assert_names(err, str(path), "Re-save it")


def test_init_from_weights_of_another_vocabulary_is_refused(root, mel, tmp_path):
    from fatlib.train import StageConfig, train_stage

    data = FatData.from_dir(root)
    stage = tmp_path / "w" / "run" / "s1"
    path = _save_stage(tmp_path / "w", mel, [*data.vocab[:-1], "Other"])  # an earlier stage on other classes
    shutil.copy(path, stage / "fold1.safetensors")
    cfg = StageConfig(name="s2", n_folds=2, epochs=1, batch_size=4, mel=MEL, model_kwargs={"width_mult": 0.125},
                      init_from=str(stage), cache_jobs=1, auto_scale=False)
    with pytest.raises(WeightsError) as err:
        train_stage(cfg, data, run_dir=tmp_path / "w" / "run", cache_dir=tmp_path / "cache", progress=False)
    _assert_names(err, str(stage / "fold0.safetensors"), "vocabulary mismatch", "Other")
    assert not list((tmp_path / "w" / "run" / "s2").glob("fold*.safetensors"))
