import numpy as np
import pandas as pd
import pytest

from fatlib.dataset import (
    FatData,
    find_data_dir,
    labels_to_multihot,
    load_or_make_folds,
    load_vocabulary,
    make_folds,
    parse_labels,
    read_split,
)
from fatlib.errors import DataError

VOCAB = ["Bark", "Bathtub_(filling_or_washing)", "Hi-hat", "Zipper_(clothing)"]


def _write_dir(root, *, curated, noisy=None, test=("t1.wav", "t2.wav"), test_labels=None, audio=True):
    """A hand-written data dir; ``curated``/``noisy``: lists of (fname, labels)."""
    root.mkdir(parents=True, exist_ok=True)
    sub = pd.DataFrame(0, index=range(len(test)), columns=VOCAB)
    sub.insert(0, "fname", list(test))
    sub.to_csv(root / "sample_submission.csv", index=False)
    splits = {"train_curated": curated, "train_noisy": noisy, "test": [(f, "") for f in test]}
    for name, rows in splits.items():
        if rows is None:
            continue
        if name != "test":
            pd.DataFrame(rows, columns=["fname", "labels"]).to_csv(root / f"{name}.csv", index=False)
        if audio:
            (root / name).mkdir(exist_ok=True)
            for fname, _ in rows:
                (root / name / fname).touch()
    if test_labels is not None:
        pd.DataFrame(test_labels, columns=["fname", "labels", "usage"]).to_csv(root / "test_labels.csv", index=False)
    return root


GOOD = [("a.wav", "Bark"), ("b.wav", "Bathtub_(filling_or_washing),Hi-hat"), ("c.wav", "Zipper_(clothing)")]


# ------------------------------------------------------------------------------ real FSDKaggle2019 CSVs
@pytest.fixture(scope="module")
def real(shared_dir):
    return FatData.from_dir(shared_dir / "fsdkaggle2019", check_files=False)


def test_real_csvs_rows_classes_and_multilabel_shares(real, shared_dir):
    vocab = pd.read_csv(shared_dir / "fsdkaggle2019" / "vocabulary.csv", header=None)[1].tolist()
    assert real.vocab == vocab and len(vocab) == 80
    assert (len(real.curated), len(real.noisy), len(real.test)) == (4970, 19815, 4481)
    for targets, share in ((real.curated.targets, 0.14), (real.noisy.targets, 0.16), (real.test_targets, 0.29)):
        assert targets.dtype == np.float32 and targets.shape[1] == 80
        assert set(np.unique(targets)) == {0.0, 1.0}
        assert (targets.sum(1) > 1).mean() == pytest.approx(share, abs=0.01)
    assert (real.curated.targets.sum(1) >= 1).all()
    assert (real.test_usage == "Public").sum() == 1120
    i = real.curated.fnames.index("0019ef41.wav")
    assert [real.vocab[c] for c in np.flatnonzero(real.curated.targets[i])] == ["Raindrop"]
    assert real.split("noisy") is real.noisy
    assert real.curated.paths()[0] == real.root / "train_curated" / real.curated.fnames[0]


def test_folds_on_real_curated_are_balanced_and_deterministic(real):
    targets = real.curated.targets
    folds = make_folds(targets, n_folds=5, seed=42)
    assert np.array_equal(folds, make_folds(targets, n_folds=5, seed=42))
    assert not np.array_equal(folds, make_folds(targets, n_folds=5, seed=7))
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= 20
    per_class = np.stack([targets[folds == k].sum(0) for k in range(5)])  # (folds, classes)
    deviation = np.abs(per_class - targets.sum(0) / 5)
    assert deviation.max() <= 3.5 and np.percentile(deviation, 90) <= 1.0
    random_folds = np.random.default_rng(0).permutation(len(targets)) % 5  # what stratification avoids
    random_dev = np.abs(np.stack([targets[random_folds == k].sum(0) for k in range(5)]) - targets.sum(0) / 5)
    assert np.percentile(random_dev, 90) > 2 * np.percentile(deviation, 90) + 1


# ------------------------------------------------------------------------------------- small CSVs
def test_parse_labels_and_multihot():
    assert parse_labels("Bathtub_(filling_or_washing),Hi-hat") == ["Bathtub_(filling_or_washing)", "Hi-hat"]
    assert parse_labels(" Bark , Hi-hat") == ["Bark", "Hi-hat"] and parse_labels("") == []
    y = labels_to_multihot([["Hi-hat", "Bark"], ["Zipper_(clothing)"]], VOCAB)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(DataError, match="Meow"):
        labels_to_multihot([["Bark"], ["Meow"]], VOCAB)


def test_good_dir_loads(tmp_path):
    root = _write_dir(tmp_path, curated=GOOD, noisy=GOOD[:2],
                      test_labels=[("t2.wav", "Bark", "Public"), ("t1.wav", "Hi-hat,Bark", "Private")])
    data = FatData.from_dir(root)
    assert data.vocab == VOCAB and data.curated.fnames == ["a.wav", "b.wav", "c.wav"]
    np.testing.assert_array_equal(data.curated.targets[1], [0, 1, 1, 0])
    assert data.test.fnames == ["t1.wav", "t2.wav"] and data.test.targets is None
    np.testing.assert_array_equal(data.test_targets, [[1, 0, 1, 0], [1, 0, 0, 0]])  # reordered to the test
    assert data.test_usage.tolist() == ["Private", "Public"]


def test_all_problems_of_a_file_in_one_error(tmp_path):
    rows = GOOD + [("d.wav", "Meow"), ("a.wav", "Bark"), ("e.wav", ""), ("f.wav", "Hi-hat,Purr")]
    root = _write_dir(tmp_path, curated=rows)
    (root / "train_curated" / "c.wav").unlink()
    with pytest.raises(DataError) as err:
        read_split(root / "train_curated.csv", VOCAB, audio_dir=root / "train_curated")
    msg = str(err.value)
    assert "train_curated.csv" in msg and "4 problem(s)" in msg
    assert "Meow" in msg and "Purr" in msg and "not in the vocabulary" in msg  # unknown labels
    assert "repeat an fname" in msg and "a.wav" in msg  # duplicates
    assert "empty labels" in msg and "e.wav" in msg
    assert "missing from" in msg and "c.wav" in msg
    # labels only: the audio check is skipped, the other three remain
    with pytest.raises(DataError, match="3 problem"):
        read_split(root / "train_curated.csv", VOCAB, audio_dir=root / "train_curated", check_files=False)


def test_from_dir_reports_every_file_together(tmp_path):
    root = _write_dir(tmp_path, curated=GOOD + [("x.wav", "Meow")], noisy=[("n.wav", "")])
    (root / "test" / "t1.wav").unlink()
    with pytest.raises(DataError) as err:
        FatData.from_dir(root)
    msg = str(err.value)
    assert "train_curated.csv" in msg and "train_noisy.csv" in msg and "t1.wav" in msg


def test_missing_noisy_split_is_empty(tmp_path):
    root = _write_dir(tmp_path, curated=GOOD)
    with pytest.warns(UserWarning, match="noisy"):
        data = FatData.from_dir(root)
    assert len(data.noisy) == 0 and data.noisy.targets.shape == (0, 4)
    assert data.test_targets is None and data.test_usage is None
    with pytest.raises(DataError, match="unknown split"):
        data.split("validation")


def test_test_labels_must_cover_the_test_clips(tmp_path):
    root = _write_dir(tmp_path, curated=GOOD, noisy=GOOD, test_labels=[("t1.wav", "Bark", "Public")])
    with pytest.raises(DataError, match="t2.wav"):
        FatData.from_dir(root)


def test_vocabulary_without_sample_submission(tmp_path):
    root = _write_dir(tmp_path, curated=[("a.wav", "Hi-hat"), ("b.wav", "Bark,Zipper_(clothing)")],
                      noisy=[("n.wav", "Bathtub_(filling_or_washing)")])
    (root / "sample_submission.csv").unlink()
    assert load_vocabulary(root) == sorted(VOCAB)


def test_find_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        find_data_dir()
    assert "input" in str(err.value) and "freesound-audio-tagging-2019" in str(err.value)
    with pytest.raises(DataError, match="elsewhere"):
        find_data_dir(tmp_path / "elsewhere")
    _write_dir(tmp_path / "input", curated=GOOD)
    assert find_data_dir().resolve() == (tmp_path / "input").resolve()
    kaggle = _write_dir(tmp_path / "work", curated=GOOD)
    assert find_data_dir(kaggle) == kaggle


def test_load_or_make_folds(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 4)) < 0.3).astype(np.float32)
    targets[np.arange(40), rng.integers(0, 4, 40)] = 1
    fnames = [f"{i:03d}.wav" for i in range(40)]
    path = tmp_path / "folds" / "curated_folds.csv"
    folds = load_or_make_folds(path, fnames, targets, n_folds=4, seed=1)
    saved = pd.read_csv(path)
    assert saved["fname"].tolist() == fnames and np.array_equal(saved["fold"], folds)
    assert len(np.bincount(folds)) == 4 and 8 <= np.bincount(folds).min() <= np.bincount(folds).max() <= 12
    # reused (not remade with the new seed), in the order of the fnames given
    again = load_or_make_folds(path, fnames[::-1], targets[::-1], n_folds=4, seed=99)
    assert np.array_equal(again, folds[::-1])
    with pytest.raises(DataError, match="do not match"):
        load_or_make_folds(path, fnames[:-1], targets[:-1], n_folds=4, seed=1)
    with pytest.raises(DataError, match="not 0..4"):
        load_or_make_folds(path, fnames, targets, n_folds=5, seed=1)
    with pytest.raises(DataError, match="n_folds"):
        make_folds(targets[:3], n_folds=5)


def test_duplicate_class_columns_are_rejected(tmp_path):
    root = _write_dir(tmp_path, curated=GOOD)
    (root / "sample_submission.csv").write_text("fname,Bark,Hi-hat,Bark\nt1.wav,0,0,0\n")
    with pytest.raises(DataError, match="Bark"):
        load_vocabulary(root)


def test_real_file_quirks_are_accepted(tmp_path):
    """A BOM, spaces around header names, a trailing comma, blank lines: read as a person would expect."""
    from fatlib.dataset import read_table

    p = tmp_path / "train_curated.csv"
    p.write_bytes(b"\xef\xbb\xbf fname , labels ,\r\na.wav,\"X,Y\",\r\n\r\nb.wav,Z\r\n")
    df = read_table(p, columns=("fname", "labels"))
    assert list(df.columns) == ["fname", "labels"]
    assert df.to_dict("list") == {"fname": ["a.wav", "b.wav"], "labels": ["X,Y", "Z"]}


def test_extra_fields_and_unnamed_columns_are_refused_by_line(tmp_path):
    from fatlib.dataset import read_table

    p = tmp_path / "train_curated.csv"
    p.write_text("fname,labels\na.wav,X\nb.wav,X,Y\n")
    with pytest.raises(DataError, match=r"train_curated.csv: 1 row\(s\) have more fields .*CSV lines \[3\].*quote"):
        read_table(p, columns=("fname", "labels"))
    p.write_text("fname,,labels\na.wav,,X\n")
    with pytest.raises(DataError, match=r"no name in column\(s\) \[2\]"):
        read_table(p, columns=("fname", "labels"))


def test_a_clip_stored_under_its_nfd_name_is_found(tmp_path):
    import unicodedata

    nfc = unicodedata.normalize("NFC", "café.wav")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / unicodedata.normalize("NFD", nfc)).write_bytes(b"")
    (tmp_path / "t.csv").write_text(f"fname,labels\n{nfc},A\n", encoding="utf-8")
    split = read_split(tmp_path / "t.csv", ["A"], audio_dir=tmp_path / "audio")
    assert split.fnames == [nfc] and split.paths()[0].is_file()
