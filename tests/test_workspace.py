"""fatlib.workspace: lookups across the working folder and read-only input roots, resuming a stage from an
earlier session's output without ever writing there (hand-made stage folders; the notebooks' rehearsal in
test_notebooks.py runs the real chain)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fatlib.errors import DataError, WeightsError
from fatlib.workspace import Roots, discover_input_roots, finished_folds, stage_finished


def _stage(d: Path, *, n_folds: int = 3, done=(), started=(), metrics: bool = False, tag: str = "") -> Path:
    """A stage folder as fatlib.train leaves it: config, each done fold's files + marker, partial folds."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"name": d.name, "n_folds": n_folds}))
    for k in [*done, *started]:
        (d / f"fold{k}_oof_curated.npy").write_text(f"oof{k}{tag}")
        (d / f"fold{k}.json").write_text(f"history{k}{tag}")
    for k in done:
        (d / f"fold{k}.safetensors").write_text(f"weights{k}{tag}")
        (d / f"fold{k}.done").write_text("done\n")
    if metrics:
        (d / "metrics.json").write_text("{}")
    return d


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_lookups_go_working_folder_first_then_each_input_root(tmp_path, monkeypatch):
    work, a, b = tmp_path / "working", tmp_path / "input" / "a", tmp_path / "input" / "b"
    for d in (work, a, b):
        d.mkdir(parents=True)
    monkeypatch.chdir(work)
    roots = Roots([a, b])
    assert roots.mirrors("cache/x.json") == [Path("cache/x.json"), a / "cache/x.json", b / "cache/x.json"]
    assert roots.mirrors(work / "cache/x.json")[1:] == [a / "cache/x.json", b / "cache/x.json"]  # absolute inside
    assert roots.mirrors(tmp_path / "elsewhere.json") == [tmp_path / "elsewhere.json"]  # outside: only itself
    assert roots.find("cache/x.json") is None
    for d in (b, a):
        (d / "cache").mkdir()
        (d / "cache/x.json").write_text(d.name)
        assert roots.find("cache/x.json") == d / "cache/x.json"  # a before b
    (work / "cache").mkdir()
    (work / "cache/x.json").write_text("mine")
    assert roots.find("cache/x.json") == Path("cache/x.json")  # the working folder first
    assert Roots(None).mirrors("cache/x.json") == [Path("cache/x.json")] and Roots([a, a]).inputs == (a,)

    # a stage: the first finished copy wins over an unfinished one found earlier
    _stage(a / "weights/r/stage1", done=[0])
    _stage(b / "weights/r/stage1", n_folds=2, done=[0, 1], metrics=True)
    assert roots.find_stage("weights/r/stage1") == b / "weights/r/stage1"
    assert stage_finished(b / "weights/r/stage1") and not stage_finished(a / "weights/r/stage1")
    assert Roots([a]).find_stage("weights/r/stage1") == a / "weights/r/stage1"  # unfinished: still found
    assert roots.find_stage("weights/r/stage9") is None


def test_bad_input_roots_and_writes_into_them_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "working"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(DataError, match="input root .*nope: no such folder. Attach the earlier notebook's output"):
        Roots([tmp_path / "nope"])
    with pytest.raises(DataError, match="holds the working folder"):
        Roots([tmp_path])
    (tmp_path / "in").mkdir()
    with pytest.raises(DataError, match="inside the read-only input root"):
        Roots([tmp_path / "in"]).check_writable(tmp_path / "in" / "weights" / "r" / "stage1")


def test_discover_input_roots_finds_earlier_outputs_only(tmp_path):
    for name, sub in (("fatlib-00", "cache"), ("fatlib-01", "weights"), ("freesound-audio-tagging-2019", "train_curated")):
        (tmp_path / name / sub).mkdir(parents=True)
    (tmp_path / "a-file").write_text("x")
    assert discover_input_roots(tmp_path) == [tmp_path / "fatlib-00", tmp_path / "fatlib-01"]
    assert discover_input_roots(tmp_path / "missing") == []


def test_adopt_stage_copies_finished_folds_only_and_never_writes_the_input(tmp_path, monkeypatch):
    work, a, b = tmp_path / "working", tmp_path / "a", tmp_path / "b"
    work.mkdir()
    monkeypatch.chdir(work)
    _stage(a / "weights/r/stage2", done=[0], tag="a")
    _stage(b / "weights/r/stage2", done=[0, 1], started=[2], tag="b")  # the later session: most folds
    (b / "weights/r/stage2/selected.csv").write_text("fname,labels,score,fold\n")
    (a / "weights/r/folds_curated.csv").write_text("fname,fold\nx,0\n")
    for d in (a, b):
        os.chmod(d, 0o555)  # read-only, as Kaggle mounts them (root ignores modes: the snapshot is the check)
    before = {d: _snapshot(d) for d in (a, b)}
    roots = Roots([a, b])
    assert roots.adopt_stage("weights/r/stage2") == [0, 1]
    got = work / "weights/r/stage2"
    assert sorted(p.name for p in got.iterdir()) == [
        "config.json", "fold0.done", "fold0.json", "fold0.safetensors", "fold0_oof_curated.npy",
        "fold1.done", "fold1.json", "fold1.safetensors", "fold1_oof_curated.npy", "selected.csv"]  # no fold2 part
    assert (got / "fold1.safetensors").read_text() == "weights1b" and finished_folds(got) == [0, 1]
    assert (work / "weights/r/folds_curated.csv").read_text() == "fname,fold\nx,0\n"  # the run's folds too
    assert not [p for p in got.iterdir() if p.name.startswith(".")]  # no temporary left
    assert {d: _snapshot(d) for d in (a, b)} == before  # the inputs are untouched

    (got / "config.json").write_text('{"name": "stage2", "n_folds": 3, "mine": 1}')
    assert roots.adopt_stage("weights/r/stage2") == []  # nothing new: idempotent, keeps this session's files
    assert "mine" in (got / "config.json").read_text()
    assert Roots([]).adopt_stage("weights/r/stage3") == [] and not (work / "weights/r/stage3").exists()
    for d in (a, b):
        os.chmod(d, 0o755)


def test_find_weights_takes_each_stage_from_where_it_is(tmp_path, monkeypatch):
    work, s2, s3 = tmp_path / "working", tmp_path / "s2", tmp_path / "s3"
    work.mkdir()
    monkeypatch.chdir(work)
    _stage(s2 / "weights/r/stage2", n_folds=1, done=[0], metrics=True)
    _stage(s3 / "weights/r/stage3", n_folds=1, done=[0], metrics=True)
    _stage(s3 / "weights/r/stage2", n_folds=1, done=[0], metrics=True, tag="older")
    roots = Roots([s2, s3])
    assert roots.find_weights(["weights/r"]) == [s2 / "weights/r/stage2", s3 / "weights/r/stage3"]
    assert roots.find_weights("weights/r", stages=["stage3"]) == [s3 / "weights/r/stage3"]
    assert roots.find_weights(["weights/r/stage3"]) == [s3 / "weights/r/stage3"]  # a stage folder itself
    assert roots.find_weights(["weights/q"]) == [Path("weights/q")]  # nowhere: predict names it
    with pytest.raises(WeightsError, match=r"weights/r: no fold\*.safetensors for stage\(s\) \['stage4'\]"):
        roots.find_weights(["weights/r"], stages=["stage2", "stage4"])


def test_cli_cache_and_predict_read_earlier_sessions(tiny_dataset, tiny_mel, tmp_path, monkeypatch, capsys):
    """`--input-roots` on the commands: a cache found in an earlier output is not rebuilt; predict takes
    each stage of a run from the output that holds it; nothing is written into those outputs."""
    import pandas as pd

    from fatlib.cache import FeatureCache
    from fatlib.checkpoint import save_weights
    from fatlib.commands.main import main
    from fatlib.dataset import FatData
    from fatlib.models import create_model

    data = FatData.from_dir(tiny_dataset)
    s0, s2, s3, work = (tmp_path / n for n in ("s0", "s2", "s3", "working"))
    cache = FeatureCache.build(data.test.paths(), tiny_mel.replace(n_mels=128, n_fft=2560, hop_length=694,
                                                                  crop_frames=128), cache_dir=s0 / "cache", name="test",
                               n_jobs=1, progress=False)  # the cnn128 preset: what `cache` builds by default
    for session, stage in ((s2, "stage2"), (s3, "stage3")):
        model = create_model("cnn_model_1", n_classes=len(data.vocab), width_mult=0.125)
        save_weights(session / "weights/r" / stage / "fold0.safetensors", model, model_name="cnn_model_1",
                     model_kwargs={"n_classes": len(data.vocab), "width_mult": 0.125}, mel_config=tiny_mel.to_dict(),
                     vocab=data.vocab)
    before = {d: _snapshot(d) for d in (s0, s2, s3)}
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["cache", "--data", str(tiny_dataset), "--splits", "test", "--input-roots", str(s0)]) == 0
    assert str(cache.data_path) in capsys.readouterr().out and not (work / "cache").exists()
    assert main(["predict", "--data", str(tiny_dataset), "--weights", "weights/r", "--input-roots", str(s2), str(s3),
                 "--out", "submission.csv"]) == 0
    assert "'stage2/cnn_model_1', 'stage3/cnn_model_1'" in capsys.readouterr().out
    assert len(pd.read_csv(work / "submission.csv")) == len(data.test.fnames)
    assert main(["predict", "--data", str(tiny_dataset), "--weights", "weights/r", "--stages", "stage4",
                 "--input-roots", str(s2), str(s3)]) == 1
    assert "no fold*.safetensors for stage(s) ['stage4']" in capsys.readouterr().err
    assert {d: _snapshot(d) for d in (s0, s2, s3)} == before


def test_workspace_is_the_four_places_in_one(tmp_path, monkeypatch):
    from fatlib.workspace import Workspace

    monkeypatch.chdir(tmp_path)  # a session's working folder; an earlier session's output attached under old/
    old = tmp_path / "old"
    (old / "weights" / "r" / "s").mkdir(parents=True)
    ws = Workspace("weights", "cache", [str(old)], False)
    assert (ws.weights, ws.cache, ws.input_roots, ws.progress) == (Path("weights"), Path("cache"), (old,), False)
    assert ws.run_dir("r") == Path("weights") / "r"
    assert ws.roots.find_stage(ws.run_dir("r") / "s") == old / "weights" / "r" / "s"
