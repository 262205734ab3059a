"""docs/FAITHFULNESS.md is generated from the recipe files: it fails here when a recipe changes and the file does not."""
from __future__ import annotations

import pytest

from fatlib.faithfulness import DOC, provenance, recipe_rows, render
from fatlib.recipes import HERE


def test_committed_table_is_the_recipes_as_they_are():
    assert DOC.read_text(encoding="utf-8") == render(), \
        "docs/FAITHFULNESS.md is stale: run `python -m fatlib.faithfulness` and commit it"


def test_a_changed_value_changes_the_table(tmp_path):
    text = (HERE / "12th_place.toml").read_text(encoding="utf-8")
    assert "batch_size = 128 " in text
    mine = tmp_path / "12th_place.toml"
    mine.write_text(text.replace("batch_size = 128 ", "batch_size = 96  ", 1), encoding="utf-8")
    rows = {(r["table"], r["key"]): r for r in recipe_rows(mine)}
    assert rows[("stage", "batch_size")]["value"] == 96 and rows[("stage", "batch_size")]["provenance"] == "write-up"
    assert rows[("small_data", "sound_mix_p")]["provenance"] == "not published: fatlib's choice"
    assert render([mine]) != render([HERE / "12th_place.toml"])


@pytest.mark.parametrize("comment, want", [
    ("write-up: 10 folds", "write-up"),
    ("REFERENCE.md: gradient clip 1", "REFERENCE.md"),
    ("not published: 64 (fatlib's choice)", "not published: fatlib's choice"),
    ("deviates: 258-frame crops (measured +0.01)", "deviates"),
    ("write-up: XResNet; depth not published: 18 (fatlib's choice)", "write-up + not published: fatlib's choice"),
    ("the one stage", "unmarked"),
    ("", "no comment"),
])
def test_provenance_of_a_comment(comment, want):
    assert provenance(comment) == want


@pytest.mark.parametrize("recipe, table, key", [
    ("3rd_place", "stage", "wave_p"),  # effects p 0.75: REFERENCE.md only
    ("3rd_place", "stage", "wave_effects"),  # +-300 cents, gain 2-10: REFERENCE.md only
    ("3rd_place", "stage", "preset"),  # n_fft 2048, hop 1024: REFERENCE.md only
    ("12th_place", "stage", "tta_step_frames"),  # the write-up gives no TTA
    ("12th_place", "predict", "step_frames"),
    ("12th_place", "stage", "loss"),  # the write-up names no loss
    ("95th_place", "stage", "preset"),  # STFT sizes and hop: REFERENCE.md only
])
def test_values_only_reference_md_gives_cite_it(recipe, table, key):
    rows = {(r["table"], r["key"]): r for r in recipe_rows(HERE / f"{recipe}.toml")}
    assert "REFERENCE.md" in rows[(table, key)]["provenance"], rows[(table, key)]
