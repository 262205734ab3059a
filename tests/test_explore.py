"""fatlib.explore: the drawn parameters are the ones the augmentation used, and the ipywidgets explorer
re-renders (clip, picture, audio) when its dropdowns and sliders change, driven headless."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def data(tiny_dataset):
    from fatlib.dataset import FatData

    return FatData.from_dir(tiny_dataset)


@pytest.fixture(scope="module")
def batch(data, tiny_mel):
    from fatlib.explore import clip_batch

    return clip_batch(data, tiny_mel, split="curated", index=3, batch_size=6, seed=2)


def test_clips_of_class_and_batch(data, batch, tiny_mel):
    from fatlib.errors import DataError
    from fatlib.explore import clips_of_class

    label = data.vocab[2]
    rows = clips_of_class(data, "curated", label)
    assert rows and all(data.curated.targets[i, 2] == 1 for i in rows)
    assert len(rows) == int(data.curated.targets[:, 2].sum())
    assert clips_of_class(data, "noisy", None) == list(range(len(data.noisy.fnames)))
    with pytest.raises(DataError, match="unknown class"):
        clips_of_class(data, "curated", "Not_a_class")
    assert batch["rows"][0] == 3 and len(set(batch["rows"])) == 6 and batch["fnames"][0] == data.curated.fnames[3]
    assert batch["x"].shape == (6, 1, 32, 32) and batch["specs"][0].shape == (32, 32)
    assert len(batch["waves"][0]) == 32 * tiny_mel.hop_length


@pytest.mark.parametrize("seed", [0, 5])
def test_drawn_parameters_are_the_ones_used(batch, data, seed):
    """The titles' numbers are what the augmentation drew: rebuilding row 0 from them gives its output."""
    import torch

    from fatlib.augment import SpecMixParams, apply_augment, get_augment, specmix_mask
    from fatlib.explore import AUGMENT_CHOICES, _spec_draws, augment_view

    x, y, n = batch["x"], batch["y"], len(batch["rows"])
    aug, _ = apply_augment(get_augment("mixup", seed=seed, alpha=0.4), x, y)
    d = _spec_draws("mixup", {"alpha": 0.4}, batch=n, n_mels=32, n_frames=32, seed=seed)
    assert torch.allclose(aug[0], d["lambda"] * x[0] + (1 - d["lambda"]) * x[d["partner"]], atol=1e-5)
    aug, yaug = apply_augment(get_augment("specmix", seed=seed), x, y)
    d = _spec_draws("specmix", {}, batch=n, n_mels=32, n_frames=32, seed=seed)
    (f0, f), (t0, t) = d["band"], d["strip"]
    mask = specmix_mask(SpecMixParams(*(torch.tensor([v]) for v in (f0, f, t0, t))), 32, 32)[0, 0]
    assert torch.equal(aug[0, 0][mask], x[d["specmix_partner"], 0][mask]) and torch.equal(aug[0, 0][~mask], x[0, 0][~mask])
    assert torch.allclose(yaug[0], (1 - d["share"]) * y[0] + d["share"] * y[d["specmix_partner"]], atol=1e-6)
    for name in ("zoomcrop", "freqshift", "ormixup"):
        v = augment_view(batch, name, seed=seed, vocab=data.vocab)
        changed = not np.allclose(v["after"], v["before"], atol=1e-3)
        assert changed == v["draws"]["applied"] or (name == "ormixup" and v["draws"]["partner"] == 0), (name, v["draws"])
    import librosa

    v = augment_view(batch, "pitch_shift", strength=600, seed=seed, vocab=data.vocab)
    expected = librosa.effects.pitch_shift(v["wave"], sr=44100, n_steps=v["draws"]["cents"] / 100, bins_per_octave=12)
    assert np.allclose(v["wave_after"], expected, atol=1e-5) and f"{v['draws']['cents']:+.0f} cents" == v["text"]
    assert set(AUGMENT_CHOICES) >= {"specmix", "mixup", "specaugment", "zoomcrop", "freqshift", "reverb", "speed"}


def test_view_figure_and_audio(batch, data, tiny_mel):
    from fatlib.explore import augment_view, invert_log_mel, plot_view, view_audio
    from fatlib.features import log_mel

    v = augment_view(batch, "specmix", seed=1, vocab=data.vocab)
    fig = plot_view(v)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(v["text"] in t and "mel bins" in t for t in titles)
    assert data.curated.fnames[3] in fig._suptitle.get_text() and "SpecMix" in fig._suptitle.get_text()
    (mesh,) = [im for ax in fig.axes if ax.get_title().startswith("after - before") for im in ax.collections]
    assert mesh.get_cmap().name == "RdBu_r"  # diverging, centred on 0
    lo, hi = mesh.get_clim()
    assert lo == -hi and hi == pytest.approx(np.abs(v["after"] - v["before"]).max())
    audio = view_audio(v)
    assert len(audio) == 3 and all(a.data[:4] == b"RIFF" for a in audio.values())
    # Griffin-Lim gives back a sound with about the same log-mel (it is heard as what is shown)
    y = invert_log_mel(v["before"], batch["cfg"])
    back = log_mel(y, batch["cfg"])[:, : v["before"].shape[1]]
    other = batch["specs"][1]
    assert np.abs(back - v["before"]).mean() < 0.5 * np.abs(other - v["before"]).mean()


def test_explorer_widgets_drive_the_view(data, tiny_mel):
    pytest.importorskip("ipywidgets")
    from fatlib.explore import AUGMENT_CHOICES, explorer

    ex = explorer(data, tiny_mel, augment="specmix", seed=0, batch_size=4, show=False)
    first, html = ex.view, ex.html
    assert ex.label.value == data.vocab[int(np.argmax(data.curated.targets.sum(0)))]  # most clips first
    assert "<img src='data:image/png;base64," in html and html.count("<audio") == 3
    # another class: another clip, picture and sound
    fig, audio = ex.figure, ex.audio["original waveform"].data
    ex.label.value = [v for _, v in ex.label.options if v != ex.label.value][0]
    assert ex.view["fname"] != first["fname"] and ex.label.value in ex.view["labels"]
    assert ex.figure is not fig and ex.audio["original waveform"].data != audio and ex.html != html
    assert ex.clip.value == ex.clip.options[0][1]
    # another clip of that class
    if len(ex.clip.options) > 1:
        before = ex.view["fname"]
        ex.clip.value = ex.clip.options[1][1]
        assert ex.view["fname"] != before
    # a waveform effect: the slider takes its range and label; its strength changes the sound
    ex.augment.value = "pitch_shift"
    c = AUGMENT_CHOICES["pitch_shift"]
    assert (ex.strength.min, ex.strength.max, ex.strength.value) == (c.low, c.high, c.default)
    assert ex.strength.description == c.label and "cents" in ex.view["text"]
    after = ex.view["wave_after"].copy()
    ex.strength.value = 1200.0
    assert not np.allclose(ex.view["wave_after"], after) and abs(ex.view["draws"]["cents"]) > 0
    # another split
    ex.split.value = "noisy"
    assert ex.view["split"] == "noisy" and ex.view["fname"] in data.noisy.fnames


def test_explorer_in_a_kernel_updates_its_output_in_place(data, tiny_dataset, tmp_path):
    """In a real kernel (nbclient), changing the class dropdown from another cell replaces the explorer's
    rendering in place (update_display_data with its display id), as a live notebook shows it."""
    pytest.importorskip("ipywidgets")
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    from fatlib.explore import clips_of_class

    counts = data.curated.targets.sum(0)
    first, second = [data.vocab[i] for i in np.argsort(-counts, kind="stable")[:2]]
    other_clip = data.curated.fnames[clips_of_class(data, "curated", second)[0]]
    cells = [f"""from fatlib import explore
from fatlib.dataset import FatData
from fatlib.features import get_preset
data = FatData.from_dir({str(tiny_dataset)!r})
cfg = get_preset("cnn128", n_mels=32, n_fft=1024, hop_length=512, crop_frames=32)
ex = explore.explorer(data, cfg, batch_size=3)""", f"ex.label.value = {second!r}\nprint(ex.view['fname'])"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = [o for o in nb.cells[0].outputs if "text/html" in o.get("data", {})]
    assert len(shown) == 1 and "Griffin-Lim" in shown[0]["data"]["text/html"]
    assert nb.cells[1].outputs[0]["text"].strip() == other_clip
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[0].outputs)
    assert shown[0]["data"]["text/html"] != "" and first != second
    # the saved first cell now holds the rendering of the second class's clip (updated, not appended)
    assert other_clip in shown[0]["data"]["text/html"]
