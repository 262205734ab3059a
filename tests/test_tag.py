"""``python -m fatlib tag`` and ``fatlib.Tagger`` on real recordings in several formats, against
``predict``'s scores for the same files; bad files skipped and named; the timeline (windows, picture)
and its peak memory on a 10-minute recording."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from _rss import fatlib_peak_rss

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (as tests/conftest.py), or beside its parent folder (a git worktree in wt/)
SAMPLES = next((d for d in (ROOT.parent / "shared" / "audio-samples", ROOT.parent.parent / "shared" / "audio-samples")
                if d.is_dir()), ROOT.parent / "shared" / "audio-samples")
# the first label of each real clip (labels.csv), and the format the test turns it into
CLIPS = {
    "fsd50k-99.wav": ("Chatter", "a/fsd50k-99.flac"),
    "fsd50k-64760.wav": ("Electric_guitar", "a/fsd50k-64760.ogg"),
    "fsd50k-21914.wav": ("Crushing", "a/b/fsd50k-21914_48k.wav"),
    "fsdnoisy18k-17.wav": ("Walk_or_footsteps", "a/b/fsdnoisy18k-17_stereo.flac"),
    "fsdnoisy18k-564.wav": ("Walk_or_footsteps", "fsdnoisy18k-564.mp3"),
    "urbansound8k-135776-2-0-49.wav": ("children_playing", "urbansound8k-135776-2-0-49.wav"),  # 48 kHz stereo as is
}
VOCAB = sorted({label for label, _ in CLIPS.values()})
PEAK_RSS_BOUND_MIB = 1100  # predict's bound (tests/test_predict_memory.py), there with a 2-minute clip
LONG_MINUTES = 10


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _tag(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fatlib", "tag", *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def mine(tmp_path_factory) -> Path:
    """The six real clips converted to flac, ogg, 48 kHz, stereo flac and mp3 (and one left 48 kHz
    stereo), in nested folders, beside a broken .wav and a text file."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/audio-samples is absent (only the project's own machines have it)")
    import librosa

    root = tmp_path_factory.mktemp("mine")
    for src, (_, rel) in CLIPS.items():
        y, sr = sf.read(SAMPLES / src, dtype="float32")
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if "_48k" in rel:
            y, sr = librosa.resample(y, orig_sr=sr, target_sr=48000), 48000
        if "_stereo" in rel:
            y = np.stack([y, 0.5 * y], axis=1)
        sf.write(out, y, sr, **({"format": "MP3"} if out.suffix == ".mp3" else {}))
    (root / "a" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt not really audio")
    (root / "a" / "notes.txt").write_text("not audio: left out without a word\n")
    return root


@pytest.fixture(scope="module")
def run(mine, tiny_mel, tmp_path_factory) -> Path:
    """A tiny trained stage: CNN-model-1 (x0.125), two folds, 30 Adam steps each on random crops of the
    six clips' log-mels (the tests' small features: 32 mels, 32-frame crops) with their labels, saved as
    weights/run/stage1/fold*.safetensors."""
    from fatlib.checkpoint import save_weights
    from fatlib.features import clip_features, to_model_input
    from fatlib.models import create_model

    cfg = tiny_mel
    specs = [torch.from_numpy(clip_features(SAMPLES / src, cfg)) for src in CLIPS]
    targets = torch.zeros(len(CLIPS), len(VOCAB))
    for i, (label, _) in enumerate(CLIPS.values()):
        targets[i, VOCAB.index(label)] = 1
    run = tmp_path_factory.mktemp("weights") / "run"
    for fold in range(2):
        torch.manual_seed(fold)
        model = create_model("cnn_model_1", n_classes=len(VOCAB), width_mult=0.125)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(fold)
        for _ in range(30):
            crops = []
            for s in specs:
                start = int(torch.randint(0, s.shape[-1] - cfg.crop_frames + 1, (1,), generator=g))
                crops.append(s[:, start : start + cfg.crop_frames])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(to_model_input(torch.stack(crops), cfg)),
                                                                        targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_weights(run / "stage1" / f"fold{fold}.safetensors", model.eval(), model_name="cnn_model_1",
                     model_kwargs=model.fatlib_kwargs, mel_config=cfg.to_dict(), vocab=VOCAB,
                     extra={"fold": fold, "tta_step_frames": 48})
    return run


def _predicted(mine: Path, run: Path, tmp: Path) -> pd.DataFrame:
    """``python -m fatlib predict`` on a data folder whose test split holds the same converted files."""
    from fatlib.commands.main import main

    data = tmp / "data"
    (data / "test").mkdir(parents=True)
    (data / "train_curated").mkdir()
    shutil.copy(SAMPLES / "fsd50k-21914.wav", data / "train_curated" / "t.wav")
    pd.DataFrame({"fname": ["t.wav"], "labels": [VOCAB[0]]}).to_csv(data / "train_curated.csv", index=False)
    names = []
    for _, rel in CLIPS.values():
        shutil.copy(mine / rel, data / "test" / Path(rel).name)
        names.append(Path(rel).name)
    pd.DataFrame({"fname": names, **{c: 0 for c in VOCAB}}).to_csv(data / "sample_submission.csv", index=False)
    assert main(["predict", "--data", str(data), "--weights", str(run), "--device", "cpu",
                 "--out", str(tmp / "submission.csv")]) == 0
    return pd.read_csv(tmp / "submission.csv").set_index("fname")


def test_tag_a_folder_equals_predict_and_skips_the_broken_file(mine, run, tmp_path):
    out = tmp_path / "out" / "tags.csv"
    res = _tag("--weights", run, "--device", "cpu", mine, "--out", out)
    assert res.returncode == 0, res.stderr
    # the one broken file: one line naming it; the text file is not audio and is not mentioned
    skipped = [line for line in res.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "broken.wav" in skipped[0] and "re-encode" in skipped[0]
    assert "notes.txt" not in res.stderr
    tags = pd.read_csv(out)
    assert sorted(Path(p).name for p in tags["path"]) == sorted(Path(rel).name for _, rel in CLIPS.values())
    sub = _predicted(mine, run, tmp_path)
    got = tags.assign(fname=[Path(p).name for p in tags["path"]]).set_index("fname").loc[sub.index, VOCAB]
    np.testing.assert_allclose(got.to_numpy(), sub[VOCAB].to_numpy(), rtol=0, atol=2e-6)
    print("std of predict's scores over the clips, per class:", sub[VOCAB].to_numpy().std(axis=0).round(3))
    assert sub[VOCAB].to_numpy().std(axis=0).max() > 0.05  # the clips score differently: the equality says something
    # the top labels are the best classes, best first; stdout (a pipe here) is one plain line per file
    best = np.argsort(-tags[VOCAB].to_numpy(), axis=1)
    assert tags["label_1"].tolist() == [VOCAB[i] for i in best[:, 0]]
    assert tags["label_2"].tolist() == [VOCAB[i] for i in best[:, 1]]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(CLIPS)
    for line, (_, row) in zip(lines, tags.iterrows()):
        path, first, *_ = line.split("\t")
        assert path == row["path"] and first == f"{row['label_1']} {row['score_1']:.3f}"
    assert sorted(p.name for p in out.parent.iterdir()) == ["tags.csv"]  # nothing else written


def test_nothing_taggable_is_exit_1_and_writes_nothing(mine, run, tmp_path, capsys):
    from fatlib.commands.main import main

    out = tmp_path / "tags.json"
    assert main(["tag", "--weights", str(run), str(mine / "a" / "broken.wav"), str(tmp_path / "absent.wav"),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped:" in err and "broken.wav" in err and "absent.wav" in err
    assert err.strip().splitlines()[-1].startswith("error: no file could be tagged")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert main(["tag", "--weights", str(run), str(mine), "--out", str(tmp_path / "tags.xlsx")]) == 1
    assert "use a .csv or .json" in capsys.readouterr().err
    assert main(["tag", "--weights", str(run), str(mine), "--timeline"]) == 1  # refused before any work
    assert "give --out" in capsys.readouterr().err


def test_python_api_timeline_and_json(mine, run, tmp_path):
    import fatlib
    from fatlib.commands.tag import format_tags, write_table

    tagger = fatlib.Tagger(weights=run, device="cpu")
    assert tagger.vocab == VOCAB and len(tagger.models) == 2 and tagger.sources["tta"] == "default"
    df = tagger.tag([mine / "a"], top_k=2)  # a folder: recursive; the broken file is listed, not raised
    assert len(df) == 4 and len(df.attrs["skipped"]) == 1 and "broken.wav" in df.attrs["skipped"][0]
    with pytest.raises(fatlib.tagger.AudioError, match="broken.wav"):
        tagger.tag([mine / "a"], on_error="raise")
    table = format_tags(df, 2, table=True).splitlines()
    assert table[0].split() == ["file", "1st", "2nd"] and len(table) == 2 + len(df)
    # the timeline: each window's scores; their mean is the file's tag score (windows TTA, mean ensemble)
    long_clip = mine / "a" / "fsd50k-99.flac"  # 14.8 s
    tl = tagger.timeline(long_clip)
    w = tl.windows
    assert len(w) > 5 and (w["start_s"].diff().dropna() > 0).all() and (w["end_s"] > w["start_s"]).all()
    assert w["start_s"].iloc[0] >= 0 and w["end_s"].iloc[-1] <= 14.9
    row = df[df["path"] == str(long_clip)]
    np.testing.assert_allclose(w[VOCAB].to_numpy().mean(axis=0), row[VOCAB].to_numpy()[0], atol=1e-5)
    png = tl.save_plot(tmp_path / "timeline.png")
    assert png.stat().st_size > 20_000
    json_out = write_table(df, tmp_path / "tags.json")
    import json

    records = json.loads(json_out.read_text())
    assert [r["path"] for r in records] == df["path"].tolist()
    assert records[0]["top"][0] == [df["label_1"][0], pytest.approx(df["score_1"][0])]
    assert set(records[0]["scores"]) == set(VOCAB)
    with pytest.raises(fatlib.tagger.DataError, match="windows"):
        fatlib.Tagger(weights=run, device="cpu", tta="full").timeline(long_clip)


@pytest.mark.parametrize("rate, channels, preset", [(44100, 1, "cnn128"), (48000, 2, "cnn128"), (22050, 2, "multires128"),
                                                     (44100, 1, "log128")])
def test_streamed_log_mel_equals_the_whole_file(tmp_path, monkeypatch, rate, channels, preset):
    """Blocks of 0.37 s (resampled across block edges), runs of 16 frames: the numbers of
    LogMel(clip_wave(path)) (silence trimmed at the start, short clips extended), and the offset of frame 0."""
    import fatlib.streaming as streaming
    from fatlib.features import clip_wave, get_preset
    from fatlib.logmel import LogMel

    monkeypatch.setattr(streaming, "BLOCK_SECONDS", 0.37)
    cfg = get_preset(preset, n_mels=32, crop_frames=32)
    mel = LogMel(cfg)
    rng = np.random.default_rng(rate)
    for seconds, lead in ((4.0, 0.8), (0.3, 0.0)):  # 3.2 s kept: over multires128's 3 s minimum
        t = np.arange(int(seconds * rate)) / rate
        y = (0.3 * np.sin(2 * np.pi * 700 * t) + 0.02 * rng.standard_normal(t.size)) * (t >= lead)
        y = np.stack([y, 0.5 * y], axis=1) if channels == 2 else y
        path = tmp_path / f"x{rate}_{seconds}.flac"
        sf.write(path, y.astype(np.float32), rate)
        got, offset, n = streaming.stream_log_mel(path, cfg, mel, run_frames=16)
        want = mel(torch.from_numpy(clip_wave(path, cfg)))[0]
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
        assert n == int(np.ceil(len(t) * cfg.sample_rate / rate))
        if seconds > 1 and cfg.trim_top_db is not None:  # trimmed: frame 0 is near the end of the silence
            assert abs(offset / cfg.sample_rate - lead) < 0.1
        elif seconds < 1:  # extended: frame 0 lies before the file's start, or at it (tiled)
            assert offset <= 0


def _long_recording(path: Path, minutes: float) -> None:
    """Tones and noise bursts that change every 20 s, written in blocks of 10 s (44.1 kHz, 16-bit)."""
    sr, rng = 44100, np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        for k in range(int(minutes * 6)):
            t = (k * 10 * sr + np.arange(10 * sr)) / sr
            freq = 300 + 400 * ((k // 2) % 5)
            f.write((0.3 * np.sin(2 * np.pi * freq * t) + (0.2 if k % 4 == 0 else 0.02) * rng.standard_normal(t.size))
                    .astype(np.float32))


def test_timeline_of_a_10_minute_recording_within_predicts_memory_bound(tmp_path):
    from fatlib.checkpoint import save_weights
    from fatlib.features import get_preset
    from fatlib.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=len(VOCAB), width_mult=0.125)
    save_weights(tmp_path / "w" / "fold0.safetensors", model, model_name="cnn_model_1", model_kwargs=model.fatlib_kwargs,
                 mel_config=get_preset("cnn128").to_dict(), vocab=VOCAB)
    rec = tmp_path / "long.wav"
    _long_recording(rec, LONG_MINUTES)
    out = tmp_path / "out" / "tags.csv"
    code, output, peak_mib = fatlib_peak_rss(["tag", "--weights", tmp_path / "w", "--device", "cpu", "--timeline",
                                              "--step-frames", "128", "--out", out, rec], env=_env())
    assert code == 0, output
    windows = pd.read_csv(out.with_name("tags_timeline.csv"))
    assert len(windows) > 290 and windows["end_s"].max() == pytest.approx(60 * LONG_MINUTES, abs=0.1)
    assert (out.parent / "tags_timeline" / "long.png").stat().st_size > 20_000
    assert peak_mib < PEAK_RSS_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB with a {LONG_MINUTES}-minute recording"
    print(f"tag --timeline, {LONG_MINUTES} min: peak RSS {peak_mib:.0f} MiB")


def test_settings_come_from_the_runs_recipe_json_unless_given(tmp_path, tiny_mel):
    import json

    from fatlib.checkpoint import save_weights
    from fatlib.models import create_model
    from fatlib.tagger import Tagger

    run = tmp_path / "run"
    for stage in ("stage1", "stage2"):
        torch.manual_seed(0)
        model = create_model("cnn_model_1", n_classes=len(VOCAB), width_mult=0.125)
        save_weights(run / stage / "fold0.safetensors", model, model_name="cnn_model_1", model_kwargs=model.fatlib_kwargs,
                     mel_config=tiny_mel.to_dict(), vocab=VOCAB, extra={"tta_step_frames": 24})
    plain = Tagger(run, device="cpu")
    assert plain.settings == {"tta": "windows", "ensemble": "mean", "rescale": False, "step_frames": None, "stages": None}
    assert len(plain.models) == 2 and plain.sources["ensemble"] == "default"
    (run / "recipe.json").write_text(json.dumps({"recipe": "x", "predict": {"tta": "sequential", "ensemble": "geometric",
                                                                             "stages": ["stage2"]}}))
    stored = Tagger(run, device="cpu")
    assert stored.settings["tta"] == "sequential" and stored.settings["ensemble"] == "geometric"
    assert stored.sources["tta"] == str(run / "recipe.json") and [lm.stage for lm in stored.models] == ["stage2"]
    given = Tagger(run / "stage1", device="cpu", tta="windows", stages=["stage1"])  # a stage folder: recipe.json above it
    assert given.settings["tta"] == "windows" and given.sources["tta"] == "given"
    assert given.settings["ensemble"] == "geometric" and [lm.stage for lm in given.models] == ["stage1"]


@pytest.mark.parametrize("rescale", [False, True])
def test_tag_with_timelines_runs_each_window_once_and_gives_tags_scores(mine, run, rescale):
    """``tag --timeline`` (Tagger.timelines): the table of Tagger.tag (same files, same skipped file, same
    scores, also with the ensemble rescaled over the files) from the timelines' forward passes: each
    model sees each window once, where tag then timeline saw it twice."""
    import fatlib

    tagger = fatlib.Tagger(weights=run, device="cpu", rescale=rescale)
    calls = []
    for lm in tagger.models:
        lm.model.register_forward_hook(lambda m, inp, out: calls.append(len(inp[0])))
    df = tagger.tag([mine / "a"], top_k=2)
    tag_crops = sum(calls)
    calls.clear()
    both, lines = tagger.timelines([mine / "a"], top_k=2)
    assert sum(calls) == tag_crops  # one pass over the windows (tag + timeline: twice that)
    assert both["path"].tolist() == df["path"].tolist() == [str(tl.path) for tl in lines]
    assert len(both.attrs["skipped"]) == 1 and "broken.wav" in both.attrs["skipped"][0]
    assert both[["label_1", "label_2"]].equals(df[["label_1", "label_2"]])
    np.testing.assert_allclose(both[VOCAB].to_numpy(), df[VOCAB].to_numpy(), atol=1e-5)
    one = tagger.tag([lines[0].path])
    np.testing.assert_allclose(lines[0].scores, one[VOCAB].to_numpy()[0], atol=1e-5)  # a file alone
