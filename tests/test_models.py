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
EXPECTED = ["cnn_model_1", "dense_m1", "dense_m2", "dense_m3", "shallow_cnn_3rd", "shallow_crnn_3rd", "stft1d_3rd",
            "vgg16_bn", "xresnet18", "xresnet34", "xresnet50"]
SMALL_BINS = 32  # stft1d_3rd in the small tests: built for the 32 frequency rows of their inputs
CONVS = (nn.Conv1d, nn.Conv2d)


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


def small_kw(name):
    return dict(n_bins=SMALL_BINS) if name == "stft1d_3rd" else {}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_small(name):
    torch.manual_seed(0)
    for in_channels, shape in ((3, (32, 32)), (1, (32, 64))):
        model = create_model(name, n_classes=5, in_channels=in_channels, width_mult=SMALL, **small_kw(name))
        x = torch.randn(2, in_channels, *shape)
        out = model(x)
        assert out.shape == (2, 5)
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert not no_grad, f"{name}: parameters without gradient {no_grad[:3]}"
        first = next(m for m in model.modules() if isinstance(m, CONVS))
        assert first.in_channels == in_channels * (SMALL_BINS if name == "stft1d_3rd" else 1)
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
    return [m.out_channels for m in model.modules() if isinstance(m, CONVS)]


@pytest.mark.parametrize("name", list_models())
def test_width_mult_scales_every_channel(name):
    full, half = meta_model(name), meta_model(name, width_mult=0.5)
    assert conv_widths(half) == [c // 2 for c in conv_widths(full)]
    hidden = [m.out_features for m in full.head.modules() if isinstance(m, nn.Linear)][:-1]
    hidden_half = [m.out_features for m in half.head.modules() if isinstance(m, nn.Linear)][:-1]
    assert hidden_half == [h // 2 for h in hidden]


@pytest.mark.parametrize("name", list_models())
def test_freq_encoding_adds_an_input_channel(name):
    if name == "stft1d_3rd":  # its frequency bins are conv channels: no position to encode
        with pytest.raises(ModelError, match="freq_encoding does not apply"):
            meta_model(name, in_channels=1, freq_encoding=True)
        return
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
    from fatlib.checkpoint import build_model, save_weights

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


# ---------------------------------------------------------------- 3rd place's models, 9th's M2 and Multisample Dropout
def conv_bn_pairs(widths, k):
    """Two (conv k-tap with bias, BN) per block: block i maps widths[i] -> widths[i+1]."""
    total = 0
    for ci, co in zip(widths[:-1], widths[1:]):
        total += k * ci * co + co + bn_params(co)  # first conv of the block (weights, bias), BN
        total += k * co * co + co + bn_params(co)  # second conv, BN
    return total


def gru_params(n_in, hidden):
    """A 1-layer bidirectional GRU: per direction 3 gates of (input, hidden and 2 bias) weights."""
    return 2 * 3 * (hidden * n_in + hidden * hidden + 2 * hidden)


def test_shallow_cnn_3rd_count_and_pooling():
    # 1 input channel + frequency encoding; 10 conv3x3 layers 32-48-64-96-128; max pools of blocks 2-5
    model = meta_model("shallow_cnn_3rd", in_channels=1, freq_encoding=True)
    assert model.pooled_blocks == [1, 2, 3, 4] and model.n_features == 48 + 64 + 96 + 128
    expected = conv_bn_pairs([2, 32, 48, 64, 96, 128], 9) + head_params(336, 256, 80)
    assert expected == 615_376
    assert count_parameters(model) == expected
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 10  # write-up: 10-12 conv layers
    every = meta_model("shallow_cnn_3rd", in_channels=1, pool_from=1)  # "from the first or second block"
    assert every.pooled_blocks == [0, 1, 2, 3, 4] and every.n_features == 368
    with pytest.raises(ModelError, match="pool_from=6"):
        meta_model("shallow_cnn_3rd", pool_from=6)


def test_shallow_crnn_3rd_count_and_rnn():
    model = meta_model("shallow_crnn_3rd", in_channels=1, freq_encoding=True)
    expected = conv_bn_pairs([2, 32, 48, 64, 96, 128], 9) + gru_params(128, 128) + head_params(256, 256, 80)
    assert expected == 792_880
    assert count_parameters(model) == expected
    gru = model.pool.gru
    assert gru.bidirectional and gru.hidden_size == 128
    assert meta_model("shallow_crnn_3rd", width_mult=0.5).pool.gru.hidden_size == 64


def test_shallow_crnn_3rd_reads_time_in_order():
    """The GRU reads the last block's frames as a sequence: reversing time changes its features, where a
    global max pool would give the same ones; the mel axis is max-pooled away before it."""
    torch.manual_seed(0)
    model = create_model("shallow_crnn_3rd", n_classes=4, in_channels=1, width_mult=0.25, freq_encoding=True)
    fmap = torch.randn(2, model.pool.gru.input_size, 4, 12)
    with torch.no_grad():
        feats = model.pool(fmap)
        assert feats.shape == (2, 2 * model.pool.hidden)
        assert (feats - model.pool(fmap.flip(-1))).abs().max() > 1e-2
        assert torch.equal(feats, model.pool(fmap.flip(2)))  # mel order: max-pooled, no effect
    assert model(torch.randn(2, 1, 32, 64)).shape == (2, 4)


def test_stft1d_3rd_count_bins_and_errors():
    # 40 bins x 1 channel as conv1d inputs; 10 conv1d k3 layers 64-96-128-192-256; max pools of blocks 2-5
    model = meta_model("stft1d_3rd", in_channels=1)
    expected = conv_bn_pairs([40, 64, 96, 128, 192, 256], 3) + head_params(96 + 128 + 192 + 256, 256, 80)
    assert expected == 879_568
    assert count_parameters(model) == expected
    assert sum(isinstance(m, nn.Conv1d) for m in model.modules()) == 10
    linear = meta_model("stft1d_3rd", in_channels=1, n_bins=129)  # a raw 256-sample STFT: 129 bins
    assert count_parameters(linear) - count_parameters(model) == 3 * (129 - 40) * 64
    small = create_model("stft1d_3rd", n_classes=3, in_channels=1, width_mult=SMALL)
    with pytest.raises(ModelError, match="n_bins"):
        small(torch.randn(2, 1, 64, 100))
    with pytest.raises(ModelError, match="at least 16"):
        small(torch.randn(2, 1, 40, 8))
    assert small.eval()(torch.randn(2, 1, 40, 17)).shape == (2, 3)  # 1-D: only time must be long enough
    with pytest.raises(ModelError, match="n_bins=0"):
        create_model("stft1d_3rd", n_bins=0)


def test_stft1d_3rd_convolves_over_time_only():
    """A shift in time moves the features; the frequency bins are channels: permuting them is not a shift."""
    torch.manual_seed(0)
    model = create_model("stft1d_3rd", n_classes=3, in_channels=1, width_mult=0.25, n_bins=32).eval()
    x = torch.zeros(1, 1, 32, 64)
    x[..., 20:30] = torch.randn(1, 1, 32, 10)
    with torch.no_grad():
        shifted = model(torch.roll(x, 16, dims=-1))  # the event moved in time, in zero background
        assert torch.allclose(model(x), shifted, atol=1e-4)  # global max pools: shift invariant
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-4)  # bins reversed: other channels


def test_dense_m2_pyramid_pooling_and_count():
    m2, m1 = meta_model("dense_m2", in_channels=1), meta_model("dense_m1", in_channels=1)
    assert m2.pooled_blocks == [1, 2, 3] and m2.n_features == 2 * (128 + 256 + 512)  # concat pools of blocks 2-4
    assert count_parameters(m2) - count_parameters(m2.head) == count_parameters(m1) - count_parameters(m1.head)
    assert count_parameters(m2.head) == head_params(1792, 128, 80) + 1  # + PReLU slope
    dense_blocks = sum(conv_params(ci, co, 3, True) + bn_params(co) + conv_params(ci + co, co, 3, True) + bn_params(co)
                       for ci, co in zip([1, 64, 128, 256], [64, 128, 256, 512]))
    assert count_parameters(m2) == dense_blocks + head_params(1792, 128, 80) + 1 == 6_480_593


@pytest.mark.parametrize("name", ["dense_m1", "dense_m2", "dense_m3"])
def test_multisample_dropout(name):
    torch.manual_seed(0)
    kw = dict(n_classes=4, in_channels=1, width_mult=SMALL)
    plain = create_model(name, **kw)
    msd = create_model(name, **kw, multisample_dropout=8)
    one = create_model(name, **kw, multisample_dropout=1)
    assert count_parameters(msd) == count_parameters(plain)  # the last layer is shared by the samples
    msd.load_state_dict(plain.state_dict())  # same keys: weights move between the two
    one.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 32, 64)
    for m in (plain, msd, one):
        m.eval()
    with torch.no_grad():
        assert torch.equal(msd(x), plain(x))  # eval: no dropout
        for m in (plain, msd, one):  # train mode for the head only, frozen BN statistics elsewhere
            m.head[-1].train()
        assert torch.equal(plain(x), plain(x))  # published: no dropout
        draws8 = torch.stack([msd(x) for _ in range(40)])
        draws1 = torch.stack([one(x) for _ in range(40)])
    assert not torch.equal(draws8[0], draws8[1])  # dropout is on in training
    # averaging 8 masks: the logits vary about 1/sqrt(8) as much as with one mask
    ratio = (draws8.var(0).mean() / draws1.var(0).mean()).item()
    assert 0.05 < ratio < 0.3, ratio
    with pytest.raises(ModelError, match="multisample_dropout=-1"):
        create_model(name, **kw, multisample_dropout=-1)
    with pytest.raises(ModelError, match="multisample_p=1"):
        create_model(name, **kw, multisample_dropout=2, multisample_p=1)


def test_shallow_cnn_3rd_residual_variant():
    """The write-up's "5-6 resnet blocks": 5 residual blocks, each adding a 1x1 conv-BN shortcut."""
    model = meta_model("shallow_cnn_3rd", in_channels=1, freq_encoding=True, residual=True)
    widths = [2, 32, 48, 64, 96, 128]
    shortcuts = sum(ci * co + bn_params(co) for ci, co in zip(widths[:-1], widths[1:]))
    expected = conv_bn_pairs(widths, 9) + shortcuts + head_params(336, 256, 80)
    assert expected == 639_216
    assert count_parameters(model) == expected
    torch.manual_seed(0)
    small = create_model("shallow_cnn_3rd", n_classes=3, in_channels=1, width_mult=SMALL, residual=True)
    out = small(torch.randn(2, 1, 32, 40))
    out.sum().backward()
    assert all(p.grad is not None for p in small.parameters())
    with pytest.raises(ModelError, match="residual='yes'"):
        create_model("shallow_cnn_3rd", residual="yes")


def test_parameter_counts_of_every_model_at_its_published_input():
    from fatlib.models import parameter_counts, published_input

    counts = parameter_counts()
    assert list(counts) == list_models()
    assert published_input("cnn_model_1") == {"in_channels": 3}
    assert published_input("shallow_cnn_3rd") == {"in_channels": 1, "freq_encoding": True}
    for name, n in counts.items():
        assert n == count_parameters(meta_model(name, **published_input(name))), name
    # the hand formulas above: CNN-model-1 on 3 channels, the 3rd place's CNN on 1 + frequency encoding
    cnn1 = sum(conv_params(ci, co, 3, True) + bn_params(co)
               for ci, co in zip([3, 64, 64, 128, 128, 256, 256, 512], [64, 64, 128, 128, 256, 256, 512, 512]))
    assert counts["cnn_model_1"] == cnn1 + head_params(1024, 512, 80)
    assert counts["shallow_cnn_3rd"] == conv_bn_pairs([2, 32, 48, 64, 96, 128], 9) + head_params(336, 256, 80)
    ten = parameter_counts(n_classes=10)
    assert counts["dense_m1"] - ten["dense_m1"] == 70 * (128 + 1)  # only the last layer depends on the classes


@pytest.mark.parametrize("name, kw", [("stft1d_3rd", dict(n_bins=32)), ("shallow_crnn_3rd", dict(freq_encoding=True)),
                                      ("dense_m2", dict(multisample_dropout=3)),
                                      ("shallow_cnn_3rd", dict(residual=True, pool_from=1))])
def test_new_models_weights_round_trip(tmp_path, name, kw):
    from fatlib.checkpoint import build_model, save_weights

    torch.manual_seed(0)
    model = create_model(name, n_classes=4, in_channels=1, width_mult=SMALL, **kw)
    path = save_weights(tmp_path / "m.safetensors", model, model_name=name, model_kwargs=model.fatlib_kwargs,
                        mel_config={}, vocab=list("abcd"))
    rebuilt, _ = build_model(path)
    x = torch.randn(2, 1, 32, 40)
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))


def test_a_model_built_for_frequency_rows_takes_them_from_the_features():
    """stft1d_3rd is built for its input's frequency rows; a stage fills them from its features' mel bands
    when nobody gave them (`--set mel.n_mels=32` builds the model it feeds), and a given value stands."""
    from fatlib.models import feature_rows_option
    from fatlib.settings import StageConfig
    from fatlib.train import effective_config, model_kwargs_for

    assert feature_rows_option("stft1d_3rd", n_mels=32, given={}) == {"n_bins": 32}
    assert feature_rows_option("stft1d_3rd", n_mels=32, given={"n_bins": 129}) == {}
    assert feature_rows_option("shallow_cnn_3rd", n_mels=32, given={}) == {}
    cfg = StageConfig(name="s", model="stft1d_3rd", preset="stft256", mel={"n_mels": 32}, auto_scale=False)
    eff, _ = effective_config(cfg, n_train=10, n_dataset=20)
    assert eff.model_kwargs == {"n_bins": 32}
    data = type("D", (), {"vocab": ["a", "b"], "n_train_clips": 20})()
    assert model_kwargs_for(cfg.replace(model_kwargs={"n_bins": 129}), data) == {"n_bins": 129}
    model = create_model("stft1d_3rd", n_classes=2, in_channels=1, width_mult=0.25, **eff.model_kwargs).eval()
    assert model(torch.randn(2, 1, 32, 64)).shape == (2, 2)
