"""Model registry and architectures: forward/backward on small inputs, published parameter counts
(at width 1, built on the meta device so nothing is allocated), options and errors."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fatlib.models import ModelError, count_parameters, create_model, list_models, supports_deep_supervision

SMALL = 0.125  # width_mult for the fast tests
EXPECTED = ["cnn_model_1", "dense_m1", "dense_m3", "vgg16_bn", "xresnet18", "xresnet34", "xresnet50"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy machine they only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def conv_params(ci, co, k, bias):
    return k * k * ci * co + (co if bias else 0)


def bn_params(c):
    return 2 * c


def head_params(n_in, hidden, n_classes):
    """BN(n_in) - Linear(n_in, hidden) - act - BN(hidden) - Linear(hidden, n_classes)."""
    return bn_params(n_in) + n_in * hidden + hidden + bn_params(hidden) + hidden * n_classes + n_classes


def test_registry_names():
    assert list_models() == EXPECTED


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_small(name):
    torch.manual_seed(0)
    for in_channels, shape in ((3, (32, 32)), (1, (32, 64))):
        model = create_model(name, n_classes=5, in_channels=in_channels, width_mult=SMALL)
        x = torch.randn(2, in_channels, *shape)
        out = model(x)
        assert out.shape == (2, 5)
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert not no_grad, f"{name}: parameters without gradient {no_grad[:3]}"
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == in_channels
        assert first.weight.grad.abs().sum() > 0


def test_cnn_model_1_count():
    convs = sum(
        conv_params(ci, co, 3, True) + bn_params(co)
        for ci, co in zip([3, 64, 64, 128, 128, 256, 256, 512], [64, 64, 128, 128, 256, 256, 512, 512])
    )
    expected = convs + head_params(1024, 512, 80)
    n = count_parameters(meta_model("cnn_model_1"))
    assert n == expected
    assert abs(n - 5.26e6) < 0.01e6


def test_vgg16_bn_count():
    model = meta_model("vgg16_bn")
    features = count_parameters(model) - count_parameters(model.head)
    assert features == 14_723_136  # torchvision vgg16_bn().features
    assert count_parameters(model.head) == head_params(1024, 512, 80)


def xresnet_count(expansion, layers, *, c_in, n_out):
    """fastai xresnet parameter count from its published layer shapes (no conv bias next to BN)."""

    def cbn(ci, co, k):
        return conv_params(ci, co, k, False) + bn_params(co)

    total = cbn(c_in, 32, 3) + cbn(32, 32, 3) + cbn(32, 64, 3)
    sizes = [64 // expansion, 64, 128, 256, 512]
    for i, n in enumerate(layers):
        for j in range(n):
            ni, nf = (sizes[i] if j == 0 else sizes[i + 1]), sizes[i + 1]
            if expansion == 1:
                total += cbn(ni, nf, 3) + cbn(nf, nf, 3)
            else:
                total += cbn(ni * 4, nf, 1) + cbn(nf, nf, 3) + cbn(nf, nf * 4, 1)
            if ni != nf:
                total += cbn(ni * expansion, nf * expansion, 1)
    return total + 512 * expansion * n_out + n_out


XRESNETS = {"xresnet18": (1, (2, 2, 2, 2)), "xresnet34": (1, (3, 4, 6, 3)), "xresnet50": (4, (3, 4, 6, 3))}


@pytest.mark.parametrize("name", sorted(XRESNETS))
def test_xresnet_count(name):
    expansion, layers = XRESNETS[name]
    for c_in, n_out in ((3, 80), (1, 1000)):
        model = meta_model(name, in_channels=c_in, n_classes=n_out)
        assert count_parameters(model) == xresnet_count(expansion, layers, c_in=c_in, n_out=n_out)
    if name == "xresnet50":
        assert count_parameters(meta_model(name, n_classes=1000)) == 25_576_264


def _fastai_xresnet_module(monkeypatch):
    """fastai.vision.models.xresnet without its package __init__ (which imports torchvision)."""
    try:
        import fastai.vision as fv
    except ImportError:
        pytest.skip("fastai.vision is unavailable")
    for mod in ("torchvision", "torchvision.models", "torchvision.models.utils"):
        monkeypatch.setitem(sys.modules, mod, None)  # make `import torchvision` fail fast, never load it
    pkg = types.ModuleType("fastai.vision.models")
    pkg.__path__ = [str(Path(fv.__file__).parent / "models")]
    monkeypatch.setitem(sys.modules, "fastai.vision.models", pkg)
    monkeypatch.delitem(sys.modules, "fastai.vision.models.xresnet", raising=False)
    if importlib.util.find_spec("fastai.vision.models.xresnet") is None:
        pytest.skip("fastai.vision.models.xresnet is unavailable")
    try:
        xr = importlib.import_module("fastai.vision.models.xresnet")
    except ImportError as e:
        pytest.skip(f"fastai's xresnet cannot be imported without torchvision here: {e}")
    monkeypatch.delitem(sys.modules, "fastai.vision.models.xresnet")
    return xr


@pytest.mark.parametrize("name", sorted(XRESNETS))
def test_xresnet_matches_fastai(name, monkeypatch):
    xr = _fastai_xresnet_module(monkeypatch)
    with torch.device("meta"):
        ref = getattr(xr, name)(c_in=1, n_out=80)
    assert count_parameters(meta_model(name, in_channels=1, n_classes=80)) == count_parameters(ref)
    mine = [m.weight.shape for m in meta_model(name, in_channels=1).modules() if isinstance(m, nn.Conv2d)]
    theirs = [m.weight.shape for m in ref.modules() if isinstance(m, nn.Conv2d)]
    assert mine == theirs


def test_dense_features_and_counts():
    m1, m3 = meta_model("dense_m1", in_channels=1), meta_model("dense_m3", in_channels=1)
    assert m1.n_features == 1024 and m3.n_features == 3840
    assert count_parameters(m1.head) == head_params(1024, 128, 80) + 1  # + PReLU slope
    assert count_parameters(m3.head) == head_params(3840, 256, 80) + 1


def conv_widths(model):
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", list_models())
def test_width_mult_scales_every_channel(name):
    full, half = meta_model(name), meta_model(name, width_mult=0.5)
    assert conv_widths(half) == [c // 2 for c in conv_widths(full)]
    hidden = [m.out_features for m in full.head.modules() if isinstance(m, nn.Linear)][:-1]
    hidden_half = [m.out_features for m in half.head.modules() if isinstance(m, nn.Linear)][:-1]
    assert hidden_half == [h // 2 for h in hidden]


@pytest.mark.parametrize("name", list_models())
def test_freq_encoding_adds_an_input_channel(name):
    first = next(m for m in meta_model(name, in_channels=1, freq_encoding=True).modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 2


def test_freq_encoding():
    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=4, in_channels=1, width_mult=SMALL, freq_encoding=True)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 2
    x = torch.randn(2, 1, 40, 33)
    enc = model.freq(x)
    assert enc.shape == (2, 2, 40, 33)
    assert torch.equal(enc[:, :1], x)
    assert torch.allclose(enc[1, 1, :, 7], torch.linspace(-1, 1, 40))
    assert torch.equal(enc[:, 1, :, :1].expand(-1, -1, 33), enc[:, 1])  # constant in time
    assert model(x).shape == (2, 4)


@pytest.mark.parametrize("name", list_models())
def test_deep_supervision(name):
    kw = dict(n_classes=3, in_channels=1, width_mult=SMALL, deep_supervision=True)
    if not supports_deep_supervision(name):
        with pytest.raises(ModelError, match=name):
            create_model(name, **kw)
        return
    plain = create_model(name, **{**kw, "deep_supervision": False})
    model = create_model(name, **kw)
    assert model.pooled_blocks == list(range(len(model.blocks)))  # every block feeds the head
    assert model.n_features > plain.n_features // 2  # max pool of all blocks vs. the last block
    n_linear = sum(isinstance(m, nn.Linear) for m in model.head.modules())
    assert n_linear == 2
    assert model(torch.randn(2, 1, 32, 48)).shape == (2, 3)


def test_deep_supervision_features_cnn():
    model = meta_model("cnn_model_1", deep_supervision=True)
    assert model.n_features == 64 + 128 + 256 + 512


def test_unknown_name_lists_models():
    with pytest.raises(ModelError, match="unknown model 'resnet9'.*cnn_model_1.*xresnet50"):
        create_model("resnet9")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_classes=0), "n_classes=0"),
        (dict(in_channels=2.0), "in_channels=2.0"),
        (dict(width_mult=0), "width_mult=0"),
        (dict(freq_encoding="yes"), "freq_encoding='yes'"),
        (dict(dropout=0.3), r"unknown option\(s\) \['dropout'\]"),
        (dict(p=1.5), "p=1.5"),
    ],
)
def test_bad_arguments(kw, match):
    name = "xresnet18"
    with pytest.raises(ModelError, match=match):
        create_model(name, **{"width_mult": SMALL, **kw})


def test_bad_input_shape():
    model = create_model("cnn_model_1", in_channels=1, width_mult=SMALL).eval()
    with pytest.raises(ModelError, match=r"expected \(batch, 1, n_mels, frames\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ModelError, match="at least 32 x 32"):
        model(torch.randn(2, 1, 32, 16))


def test_numpy_scalars_accepted_and_stored_as_json_types():
    model = create_model("cnn_model_1", n_classes=np.int64(4), width_mult=np.float32(0.125))
    assert json.loads(json.dumps(model.fatlib_kwargs))["n_classes"] == 4
    assert type(model.fatlib_kwargs["width_mult"]) is float


def test_kwargs_stored_and_weights_round_trip(tmp_path):
    from fatlib.weights import build_model, save_weights

    torch.manual_seed(0)
    model = create_model("xresnet18", n_classes=6, in_channels=1, width_mult=SMALL, freq_encoding=True, p=0.1)
    assert model.fatlib_name == "xresnet18"
    assert model.fatlib_kwargs == dict(
        n_classes=6, in_channels=1, width_mult=SMALL, freq_encoding=True, deep_supervision=False, p=0.1
    )
    path = save_weights(
        tmp_path / "m.safetensors",
        model,
        model_name=model.fatlib_name,
        model_kwargs=model.fatlib_kwargs,
        mel_config={},
        vocab=list("abcdef"),
    )
    rebuilt, meta = build_model(path)
    x = torch.randn(2, 1, 32, 40)
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))
