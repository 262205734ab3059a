import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from fatlib.errors import DataError, WeightsError
from fatlib.features import clip_features, clip_stats, load_audio, to_model_input
from fatlib.predict import (
    crop_plan,
    evaluate,
    extend_frames,
    find_models,
    full_frames,
    predict_clips,
    sequential_starts,
    window_starts,
    write_submission,
)


# ----------------------------------------------------------------------------- crop plans
@pytest.mark.parametrize("n", [32, 33, 79, 80, 81, 200, 1000])
def test_windows_cover_the_clip_at_most_48_frames_apart(n):
    w = 32
    starts = window_starts(n, width_frames=w, step_frames=48)
    assert starts[0] == 0 and starts[-1] == max(n - w, 0)  # first at the start, last flush with the end
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= 48).all()
    assert gaps.size == 0 or gaps.max() - gaps.min() <= 1  # evenly spread
    assert len(starts) == (1 if n <= w else -(-(n - w) // 48) + 1)  # the fewest windows 48 frames apart


def test_windows_match_the_12th_place_kernel():
    """The published example: T = 200 frames, crop 128, step 48 -> windows start at 0, 36, 72 (linspace)."""
    assert window_starts(200, width_frames=128, step_frames=48).tolist() == [0, 36, 72]
    assert crop_plan(200, tta="windows", width_frames=128) == [(0, 128), (36, 128), (72, 128)]
    np.testing.assert_array_equal(window_starts(200, width_frames=128), np.linspace(0, 72, 3).astype(int))


def test_windows_exact_positions_and_short_clips():
    assert window_starts(200, width_frames=32, step_frames=48).tolist() == [0, 42, 84, 126, 168]
    assert window_starts(176, width_frames=32, step_frames=48).tolist() == [0, 48, 96, 144]
    assert window_starts(20, width_frames=32).tolist() == [0]
    assert crop_plan(20, tta="windows", width_frames=32) == [(0, 32)]
    assert crop_plan(20, tta="sequential", width_frames=32) == [(0, 32)]
    assert crop_plan(20, tta="full", width_frames=32) == [(0, 32)]


@pytest.mark.parametrize("n", [32, 50, 64, 100, 127, 128, 129])
def test_sequential_counts_each_frame_once_except_the_end_crop(n):
    w = 32
    starts = sequential_starts(n, width_frames=w)
    counts = np.zeros(n, int)
    for s in starts:
        counts[s : s + w] += 1
    assert (counts >= 1).all()  # the whole clip is seen
    assert (counts[: n - w] == 1).all()  # nothing before the end crop (the start) is counted twice
    twice = np.flatnonzero(counts == 2)
    if n % w == 0:
        assert len(starts) == n // w and twice.size == 0
    else:
        # the only double counts are the overlap of the end-aligned crop with the previous crop
        assert starts[-1] == n - w
        assert twice.tolist() == list(range(n - w, (n // w) * w))
    assert counts.max() <= 2


def test_full_frames_quantised_and_centred():
    assert full_frames(100, width_frames=32, quantum_frames=16) == 96
    assert full_frames(96, width_frames=32, quantum_frames=16) == 96
    assert full_frames(20, width_frames=32, quantum_frames=16) == 32
    assert crop_plan(101, tta="full", width_frames=32, quantum_frames=16) == [(2, 96)]


def test_extend_frames_per_preset():
    spec = torch.arange(10, dtype=torch.float32).view(1, 10).repeat(2, 1) - 50
    rep = extend_frames(spec, width_frames=25, mode="repeat")
    assert rep.shape == (2, 25) and torch.equal(rep[:, 10:20], spec) and torch.equal(rep[:, 20:], spec[:, :5])
    pad = extend_frames(spec, width_frames=25, mode="pad")
    assert torch.equal(pad[:, 7:17], spec)  # centred
    assert (pad[:, :7] == spec.min()).all() and (pad[:, 17:] == spec.min()).all()
    assert extend_frames(spec, width_frames=5, mode="pad") is spec


def test_bad_scheme_and_steps_are_named():
    with pytest.raises(DataError, match="unknown"):
        crop_plan(100, tta="random", width_frames=32)
    with pytest.raises(DataError, match="step_frames"):
        window_starts(100, width_frames=32, step_frames=0)


# ----------------------------------------------------------------------------- prediction
SECONDS = [0.25, 0.9, 0.9, 1.3, 2.1, 0.6]  # two equal lengths share a "full" batch


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, sec in enumerate(SECONDS):
        t = np.arange(int(sec * 44100)) / 44100
        y = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
        y += 0.02 * rng.standard_normal(t.size)
        paths.append(root / f"clip{i}.wav")
        sf.write(paths[-1], y.astype(np.float32), 44100, subtype="PCM_16")
    return paths


class TinyNet(torch.nn.Module):
    """Max over time of each (channel, mel) row, then a linear layer: any frame count, no batch-dependent
    layer, and scores that move with the content of each crop."""

    def __init__(self, n_mels: int, n_classes: int = 5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(n_mels, n_classes)

    def forward(self, x):
        return self.fc(x[:, 0].amax(dim=-1)) * 3.0


@pytest.fixture(scope="module")
def model(tiny_mel):
    return TinyNet(tiny_mel.n_mels).eval()


@pytest.fixture(scope="module")
def cnn():
    from fatlib.models import create_model

    torch.manual_seed(0)
    return create_model("cnn_model_1", n_classes=5, width_mult=0.125).eval()


def _reference(model, path, cfg, plan_kw):
    """One clip the slow way: librosa features, the crop plan, one crop at a time."""
    spec = torch.from_numpy(clip_features(load_audio(path, sample_rate=cfg.sample_rate), cfg))
    stats = [clip_stats(spec)] if cfg.normalize == "clip" else None  # whole-clip statistics, as in training
    probs = []
    with torch.no_grad():
        for s, length in crop_plan(spec.shape[-1], width_frames=cfg.crop_frames, **plan_kw):
            x = to_model_input(spec[None, :, s : s + length], cfg, stats=stats)
            probs.append(torch.sigmoid(model(x))[0].numpy())
    return np.mean(probs, axis=0)


@pytest.mark.parametrize("tta", ["windows", "sequential", "full"])
def test_predict_matches_one_clip_at_a_time_reference(clips, model, tiny_mel, tta):
    kw = dict(tta=tta, step_frames=16, quantum_frames=8)
    got = predict_clips(model, clips, tiny_mel, tta=tta, step_frames=16, length_quantum_frames=8,
                        batch_size=4, progress=False, device="cpu")
    want = np.stack([_reference(model, p, tiny_mel, kw) for p in clips])
    assert got.shape == (len(clips), 5) and got.dtype == np.float32
    assert ((got > 0) & (got < 1)).all() and got.std(axis=0).min() > 0.02  # clips differ
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_full_with_length_bucketing_equals_one_by_one(clips, model, tiny_mel):
    bucketed = predict_clips(model, clips, tiny_mel, tta="full", batch_size=8, length_quantum_frames=16,
                             progress=False, device="cpu")
    single = predict_clips(model, clips, tiny_mel, tta="full", batch_size=1, sort_by_length=False,
                           length_quantum_frames=16, progress=False, device="cpu")
    np.testing.assert_allclose(bucketed, single, atol=1e-5)
    # the schemes see different crops, so they differ: the comparison above is not vacuous
    windows = predict_clips(model, clips, tiny_mel, tta="windows", batch_size=8, progress=False, device="cpu")
    assert np.abs(windows - bucketed).max() > 0.05


def test_full_batches_hold_a_bounded_number_of_frames(clips, tiny_mel):
    shapes = []

    class Recorder(TinyNet):
        def forward(self, x):
            shapes.append(tuple(x.shape))
            return super().forward(x)

    predict_clips(Recorder(tiny_mel.n_mels), clips, tiny_mel, tta="full", batch_size=6, length_quantum_frames=8,
                  progress=False, device="cpu")
    assert sum(b for b, *_ in shapes) == len(clips)  # every clip once
    assert all(b == 1 or b * t <= 6 * tiny_mel.crop_frames for b, _, _, t in shapes)
    assert max(b for b, *_ in shapes) > 1  # short clips still share a batch


def test_several_models_reduce(clips, model, tiny_mel):
    other = TinyNet(tiny_mel.n_mels, seed=1).eval()
    per_model = predict_clips([model, other], clips[:3], tiny_mel, reduce=None, progress=False, device="cpu")
    assert per_model.shape == (2, 3, 5)
    np.testing.assert_allclose(per_model[0], predict_clips(model, clips[:3], tiny_mel, progress=False, device="cpu"), atol=1e-6)
    mean = predict_clips([model, other], clips[:3], tiny_mel, progress=False, device="cpu")
    np.testing.assert_allclose(mean, per_model.mean(0), atol=1e-6)


def test_missing_clip_is_an_audio_error(clips, model, tiny_mel, tmp_path):
    from fatlib.errors import AudioError

    with pytest.raises(AudioError, match="nope.wav"):
        predict_clips(model, [clips[0], tmp_path / "nope.wav"], tiny_mel, progress=False, device="cpu")


# ----------------------------------------------------------------------------- weights
VOCAB = ["Bark", "Meow", "Purr", "Hiss", "Chirp"]


def _save(path, model, cfg, *, name="cnn_model_1", vocab=VOCAB):
    from fatlib.checkpoint import save_weights

    return save_weights(path, model, model_name=name, model_kwargs=model.fatlib_kwargs,
                        mel_config=cfg.to_dict(), vocab=vocab)


def test_find_models_loads_folds_and_checks(tmp_path, cnn, tiny_mel, clips):
    model = cnn
    run = tmp_path / "run"
    for k in range(2):
        _save(run / "stage2" / f"fold{k}.safetensors", model, tiny_mel)
    loaded = find_models(run, vocab=VOCAB)
    assert [lm.path.name for lm in loaded] == ["fold0.safetensors", "fold1.safetensors"]
    assert {lm.group for lm in loaded} == {"stage2/cnn_model_1"} and loaded[0].mel_config == tiny_mel
    # the loaded weights predict exactly like the saved model
    np.testing.assert_allclose(
        predict_clips(loaded[0].model, clips[:2], tiny_mel, progress=False, device="cpu"),
        predict_clips(model, clips[:2], tiny_mel, progress=False, device="cpu"), atol=1e-6,
    )
    with pytest.raises(WeightsError, match=r"fold0\.safetensors.*vocabulary mismatch"):
        find_models(run, vocab=VOCAB[::-1])
    with pytest.raises(WeightsError, match=r"stage3.*stage2"):
        find_models(run, vocab=VOCAB, stages=["stage3"])
    with pytest.raises(WeightsError, match="fold0.safetensors.*not 'vgg16_bn'"):
        find_models(run, vocab=VOCAB, model_name="vgg16_bn")
    with pytest.raises(WeightsError, match="feature settings differ"):
        find_models(run / "stage2", vocab=VOCAB, mel_config=tiny_mel.replace(n_mels=40))


def test_find_models_wrong_architecture_names_the_file(tmp_path, cnn, tiny_mel):
    model = cnn
    bad = _save(tmp_path / "s" / "fold3.safetensors", model, tiny_mel, name="dense_m1")
    with pytest.raises(WeightsError, match=str(bad)):
        find_models(tmp_path / "s", vocab=VOCAB)
    with pytest.raises(WeightsError, match="no such weights folder"):
        find_models(tmp_path / "absent", vocab=VOCAB)


# ----------------------------------------------------------------------------- submission
@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample_submission.csv"
    pd.DataFrame({"fname": ["c.wav", "a.wav", "b.wav"], "x": 0, "y": 0}).to_csv(path, index=False)
    return path


def test_submission_follows_the_sample(tmp_path, sample):
    scores = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    out = write_submission(tmp_path / "sub.csv", ["a.wav", "b.wav", "c.wav"], scores, ["x", "y"], sample)
    df = pd.read_csv(out)
    assert list(df.columns) == ["fname", "x", "y"]
    assert df["fname"].tolist() == ["c.wav", "a.wav", "b.wav"]
    np.testing.assert_allclose(df[["x", "y"]].to_numpy(), scores[[2, 0, 1]])


@pytest.mark.parametrize(
    "fnames, scores, vocab, match",
    [
        (["a.wav", "b.wav"], np.full((2, 2), 0.5), ["x", "y"], r"1 clip\(s\).*have no scores.*c\.wav"),
        (["a.wav", "b.wav", "c.wav"], np.array([[0.1, np.nan], [0.2, 0.2], [0.3, 0.3]]), ["x", "y"], "NaN.*a.wav"),
        (["a.wav", "b.wav", "c.wav"], np.full((3, 2), 1.5), ["x", "y"], r"outside \[0, 1\]"),
        (["a.wav", "b.wav", "c.wav"], np.full((3, 2), 0.5), ["y", "x"], "columns"),
        (["a.wav", "a.wav", "c.wav"], np.full((3, 2), 0.5), ["x", "y"], "more than once"),
        (["a.wav", "b.wav", "c.wav", "d.wav"], np.full((4, 2), 0.5), ["x", "y"], r"d\.wav"),
    ],
)
def test_submission_errors_write_nothing(tmp_path, sample, fnames, scores, vocab, match):
    with pytest.raises(DataError, match=match):
        write_submission(tmp_path / "sub.csv", fnames, scores, vocab, sample)
    assert not (tmp_path / "sub.csv").exists()


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_known_answer(tmp_path):
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=np.float32)
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.3], [0.1, 0.2, 0.3]])
    # clip 0: class a ranked 1st -> 1; clip 1: b 2nd -> 1/2, c 3rd -> 2/3; clip 2 has no label
    ev = evaluate(truth, scores, ["a", "b", "c"], usage=["Public", "Private", "Private"], out_dir=tmp_path)
    assert ev["lwlrap"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    assert ev["by_usage"] == pytest.approx({"Public": 1.0, "Private": (1 / 2 + 2 / 3) / 2})
    assert ev["per_class"]["b"] == pytest.approx({"lwlrap": 0.5, "weight": 1 / 3})
    assert json.loads((tmp_path / "evaluation.json").read_text())["lwlrap"] == pytest.approx(ev["lwlrap"])
    assert (tmp_path / "per_class_lwlrap.png").stat().st_size > 1000
    with pytest.raises(DataError, match="usage"):
        evaluate(truth, scores, ["a", "b", "c"], usage=["Public"])


# ----------------------------------------------------------------------------- cache and command line
def test_predict_from_a_feature_cache(clips, model, tiny_mel, tmp_path):
    from fatlib.cache import FeatureCache

    cache = FeatureCache.build(clips, tiny_mel, cache_dir=tmp_path, name="test", n_jobs=1, progress=False)
    from_cache = predict_clips(model, cache, tiny_mel, tta="windows", progress=False, device="cpu")
    from_audio = predict_clips(model, clips, tiny_mel, tta="windows", progress=False, device="cpu")
    np.testing.assert_allclose(from_cache, from_audio, atol=5e-3)  # float16 storage
    with pytest.raises(DataError, match="other settings"):
        predict_clips(model, cache, tiny_mel.replace(n_fft=512), progress=False, device="cpu")


def test_cli_predict_writes_submission_and_evaluation(tiny_dataset, tiny_mel, cnn, tmp_path, capsys):
    from fatlib.commands.main import main
    from fatlib.dataset import FatData

    data = FatData.from_dir(tiny_dataset)
    run = tmp_path / "weights" / "run"
    from fatlib.models import create_model

    torch.manual_seed(0)
    six = create_model("cnn_model_1", n_classes=len(data.vocab), width_mult=0.125)
    for stage in ("stage2", "stage3"):
        _save(run / stage / "fold0.safetensors", six, tiny_mel, vocab=data.vocab)
    out = tmp_path / "sub" / "submission.csv"
    assert main(["predict", "--data", str(tiny_dataset), "--weights", str(run), "--stages", "stage3",
                 "--tta", "sequential", "--out", str(out)]) == 0
    sub = pd.read_csv(out)
    sample = pd.read_csv(tiny_dataset / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and sub["fname"].tolist() == sample["fname"].tolist()
    assert sub.iloc[:, 1:].to_numpy().min() >= 0 and sub.iloc[:, 1:].to_numpy().max() <= 1
    ev = json.loads((tmp_path / "sub" / "submission_eval" / "evaluation.json").read_text())
    assert set(ev["by_usage"]) <= {"Public", "Private"} and 0 < ev["lwlrap"] <= 1
    assert "test lwlrap" in capsys.readouterr().out
    # a vocabulary that does not match the data is refused, naming the file
    _save(run / "stage9" / "fold0.safetensors", six, tiny_mel, vocab=[f"x{i}" for i in range(len(data.vocab))])
    assert main(["predict", "--data", str(tiny_dataset), "--weights", str(run), "--out", str(out)]) == 1
    assert "stage9/fold0.safetensors: vocabulary mismatch" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bounded memory
def test_length_batches_never_pad_to_a_much_longer_clip():
    from fatlib.batching import length_batches

    rng = np.random.default_rng(0)
    lengths = np.append(rng.integers(100, 400, 50), 40_000)  # one 10-minute clip among short ones
    batches = length_batches(lengths, max_items=16, max_frames=4096)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))  # each clip once
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * lengths[b].max() <= 4096)
    assert [50] in [b.tolist() for b in batches]  # the long clip alone
    equal = length_batches([32, 48, 32, 48, 32], max_items=2, max_frames=1000, equal_lengths=True)
    assert [b.tolist() for b in equal] == [[0, 2], [4], [1, 3]]


def test_long_clip_log_mel_in_parts_equals_one_pass(tiny_mel):
    from fatlib.logmel import LogMel

    mel = LogMel(tiny_mel)
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(200 * 512 + 77).astype(np.float32) * 0.1)
    whole = mel(wave)[0]
    for frames_per_pass in (1, 7, 64, 10_000):
        parts = mel.long_clip(wave, frames_per_pass=frames_per_pass)
        assert parts.shape == whole.shape
        torch.testing.assert_close(parts, whole, atol=1e-4, rtol=0)


def test_small_budget_gives_the_same_scores(clips, model, tiny_mel):
    """batch_size 1: every clip longer than one crop is computed alone, in parts; same scores."""
    small = predict_clips(model, clips, tiny_mel, batch_size=1, progress=False, device="cpu")
    large = predict_clips(model, clips, tiny_mel, batch_size=64, progress=False, device="cpu")
    np.testing.assert_allclose(small, large, atol=1e-5)


# ----------------------------------------------------------------------------- TTA step from the weights
def test_predict_uses_the_oof_step_stored_in_the_weights(tiny_dataset, tiny_mel, tmp_path, monkeypatch):
    import fatlib.predict as predict
    from fatlib.checkpoint import save_weights
    from fatlib.dataset import FatData
    from fatlib.models import create_model

    data = FatData.from_dir(tiny_dataset)
    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=len(data.vocab), width_mult=0.125)
    kw = dict(model_name="cnn_model_1", model_kwargs=model.fatlib_kwargs, mel_config=tiny_mel.to_dict(), vocab=data.vocab)
    save_weights(tmp_path / "new" / "fold0.safetensors", model, extra={"fold": 0, "tta_step_frames": 12}, **kw)
    save_weights(tmp_path / "old" / "fold0.safetensors", model, extra={"fold": 0}, **kw)  # before the step was stored
    steps = []
    real = predict.predict_clips

    def spy(*args, **kwargs):
        steps.append(kwargs["step_frames"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_clips", spy)
    run = dict(progress=False, device="cpu")
    predict.predict_test(data, tmp_path / "new", out=tmp_path / "a.csv", **run)
    predict.predict_test(data, tmp_path / "old", out=tmp_path / "b.csv", **run)
    predict.predict_test(data, tmp_path / "new", step_frames=20, out=tmp_path / "c.csv", **run)
    assert steps == [12, predict.DEFAULT_STEP_FRAMES, 20]

    # a model whose scores are NaN is named
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 1).fill_(float("nan"))
    save_weights(tmp_path / "nan" / "stage2" / "fold3.safetensors", model, **kw)
    with pytest.raises(WeightsError, match=r"stage2/fold3\.safetensors: this model.s scores are NaN"):
        predict.predict_test(data, tmp_path / "nan", out=tmp_path / "d.csv", **run)
    assert not (tmp_path / "d.csv").exists()
