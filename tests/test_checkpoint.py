import pytest
import torch
from torch import nn

from fatlib.checkpoint import check_compatible, load_into, read_metadata, save_weights
from fatlib.errors import WeightsError

VOCAB = ["Bark", "Meow", "Purr"]
MEL = {"n_mels": 32, "hop_length": 512}


def _net(n_out=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, n_out))


def _save(tmp_path, model=None, vocab=VOCAB):
    return save_weights(
        tmp_path / "fold0.safetensors", model or _net(), model_name="tiny", model_kwargs={"n_classes": 3},
        mel_config=MEL, vocab=vocab,
    )


def test_roundtrip_restores_tensors_and_metadata(tmp_path):
    src = _net()
    path = _save(tmp_path, src)
    dst = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    meta = load_into(dst, path)
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)
    assert meta["vocab"] == VOCAB and meta["mel_config"] == MEL and meta["model_name"] == "tiny"
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_wrong_class_count_is_a_clear_error(tmp_path):
    path = _save(tmp_path)
    with pytest.raises(WeightsError, match=r"fold0.safetensors.*shape mismatch"):
        load_into(_net(n_out=5), path)


def test_vocabulary_and_model_mismatch(tmp_path):
    path = _save(tmp_path)
    meta = read_metadata(path)
    check_compatible(path, meta, model_name="tiny", vocab=VOCAB, mel_config=MEL)
    with pytest.raises(WeightsError, match="vocabulary mismatch.*absent from the weights: \\['Hiss'\\]"):
        check_compatible(path, meta, vocab=["Bark", "Meow", "Hiss"])
    with pytest.raises(WeightsError, match="another order"):
        check_compatible(path, meta, vocab=VOCAB[::-1])
    with pytest.raises(WeightsError, match="not 'vgg16_bn'"):
        check_compatible(path, meta, model_name="vgg16_bn")
    with pytest.raises(WeightsError, match="feature settings differ"):
        check_compatible(path, meta, mel_config={"n_mels": 64})


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsError, match="no fatlib metadata"):
        read_metadata(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="junk.safetensors: not a readable safetensors"):
        read_metadata(junk)
    with pytest.raises(WeightsError, match="not found"):
        read_metadata(tmp_path / "missing.safetensors")


def _flip_last_tensor_bit(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the low bit of the last tensor byte: a change of ~1e-7 relative
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_tensors_is_refused_by_name(tmp_path):
    from fatlib.checkpoint import verify_weights

    path = _save(tmp_path)
    assert verify_weights(path) is True
    _flip_last_tensor_bit(path)
    read_metadata(path)  # the header is intact
    with pytest.raises(WeightsError, match=r"fold0.safetensors: damaged.*checksum"):
        load_into(_net(), path)
    with pytest.raises(WeightsError, match="damaged"):
        verify_weights(path)


def test_changed_metadata_is_refused(tmp_path):
    path = _save(tmp_path)
    data = path.read_bytes()
    assert data.count(b"Meow") == 1
    path.write_bytes(data.replace(b"Meow", b"Meox"))  # same length: the file still parses
    with pytest.raises(WeightsError, match="damaged"):
        load_into(_net(), path)


def test_a_file_without_checksum_loads_with_a_warning(tmp_path):
    import json

    from safetensors.torch import save_file

    from fatlib.checkpoint import UnverifiedWeightsWarning, verify_weights

    src = _net()
    path = tmp_path / "old.safetensors"
    meta = {"fatlib_format": "1", "model_name": "tiny", "model_kwargs": "{}", "mel_config": json.dumps(MEL),
            "vocab": json.dumps(VOCAB), "extra": "{}"}
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path), metadata=meta)
    with pytest.warns(UnverifiedWeightsWarning, match="old.safetensors: unverified .*re-save"):
        load_into(_net(), path)
    assert verify_weights(path) is False


def test_metadata_of_the_wrong_form_is_refused(tmp_path):
    path = _save(tmp_path, vocab=["Bark", "Bark", "Purr"])
    with pytest.raises(WeightsError, match="fold0.safetensors: damaged fatlib metadata: vocab"):
        read_metadata(path)
