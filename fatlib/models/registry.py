"""The model registry (timm style): ``@register_model`` on a builder, ``create_model(name, ...)``.

A builder is a function ``name(*, n_classes, in_channels, width_mult, freq_encoding,
deep_supervision, **options) -> nn.Module``. ``create_model`` validates the common arguments, and
stores the name and every keyword argument on the model (``model.fatlib_name``,
``model.fatlib_kwargs``) so that ``fatlib.checkpoint.save_weights`` can record them and
``fatlib.checkpoint.build_model`` can recreate the model.
"""
from __future__ import annotations

import inspect
import json
import numbers
from typing import Any, Callable

import numpy as np
from torch import nn

from ..errors import ModelError

Builder = Callable[..., nn.Module]
COMMON = ("n_classes", "in_channels", "width_mult", "freq_encoding", "deep_supervision")

_REGISTRY: dict[str, Builder] = {}
_NO_DEEP_SUPERVISION: dict[str, str] = {}  # model name -> why deep supervision does not apply
_PUBLISHED: dict[str, dict[str, Any]] = {}  # model name -> create_model arguments of its published input


def register_model(
    fn: Builder | None = None, *, deep_supervision: bool = True, why_not: str = "",
    published: dict[str, Any] | None = None,
) -> Builder | Callable[[Builder], Builder]:
    """Register ``fn`` under its function name. Use bare (``@register_model``) or with
    ``deep_supervision=False, why_not="..."`` for a model where that option does not apply;
    ``published``: the ``create_model`` arguments of the input its solution used (e.g.
    ``{"in_channels": 1}``; default: 3 channels), for :func:`parameter_counts`."""

    def deco(f: Builder) -> Builder:
        if f.__name__ in _REGISTRY:
            raise ModelError(f"model {f.__name__!r} is registered twice; give the builder another name.")
        _REGISTRY[f.__name__] = f
        if not deep_supervision:
            _NO_DEEP_SUPERVISION[f.__name__] = why_not
        _PUBLISHED[f.__name__] = dict(published or {})
        return f

    return deco(fn) if fn is not None else deco


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def feature_rows_option(name: str, *, n_mels: int, given: dict) -> dict[str, Any]:
    """``{"n_bins": n_mels}`` for a model built for a number of frequency rows (``stft1d_3rd``) when ``given``
    (its options) sets none, else ``{}``: the rows follow the features, as ``in_channels`` does."""
    takes = "n_bins" in inspect.signature(_get(name)).parameters
    return {"n_bins": int(n_mels)} if takes and "n_bins" not in given else {}


def published_input(name: str) -> dict[str, Any]:
    """The ``create_model`` arguments of the input ``name``'s solution used (in_channels, freq_encoding)."""
    _get(name)
    return {"in_channels": 3, **_PUBLISHED[name]}


def parameter_counts(*, n_classes: int = 80) -> dict[str, int]:
    """Parameters of every registered model at the published width (1.0) and input (:func:`published_input`),
    for ``n_classes`` classes. Built on the meta device: nothing is allocated."""
    import torch

    counts = {}
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name, n_classes=n_classes, **published_input(name))
        counts[name] = sum(p.numel() for p in model.parameters())
    return counts


def supports_deep_supervision(name: str) -> bool:
    """Whether ``create_model(name, deep_supervision=True)`` is allowed."""
    _get(name)
    return name not in _NO_DEEP_SUPERVISION


def _get(name: str) -> Builder:
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}. Registered models: {', '.join(list_models())}.")
    return _REGISTRY[name]


def _check_common(name: str, n_classes, in_channels, width_mult, freq_encoding, deep_supervision) -> None:
    for arg, value in (("n_classes", n_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ModelError(f"create_model({name!r}): {arg}={value!r}; pass a positive integer.")
    if isinstance(width_mult, bool) or not isinstance(width_mult, numbers.Real) or not width_mult > 0:
        raise ModelError(
            f"create_model({name!r}): width_mult={width_mult!r}; pass a positive number "
            "(1.0: the published widths, e.g. 0.125 for tests)."
        )
    for arg, value in (("freq_encoding", freq_encoding), ("deep_supervision", deep_supervision)):
        if not isinstance(value, (bool, np.bool_)):
            raise ModelError(f"create_model({name!r}): {arg}={value!r}; pass True or False.")
    if deep_supervision and name in _NO_DEEP_SUPERVISION:
        ok = [n for n in list_models() if n not in _NO_DEEP_SUPERVISION]
        raise ModelError(
            f"create_model({name!r}): deep_supervision does not apply: {_NO_DEEP_SUPERVISION[name]} "
            f"Use deep_supervision=False, or one of {', '.join(ok)}."
        )


def create_model(
    name: str,
    *,
    n_classes: int = 80,
    in_channels: int = 3,
    width_mult: float = 1.0,
    freq_encoding: bool = False,
    deep_supervision: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``: input ``(B, in_channels, n_mels, frames)`` with at least
    32 mel bins and 32 frames, output logits ``(B, n_classes)``.

    ``width_mult`` scales every channel count (1.0: published shapes); ``freq_encoding`` appends a
    linspace(-1, 1) channel along the mel axis inside the model; ``deep_supervision`` pools every
    block into the head (not for ``dense_m3``). Extra ``kwargs`` go to the builder (e.g. ``p`` for
    XResNet dropout); they must be JSON values so the weights file can store them.
    """
    builder = _get(name)
    _check_common(name, n_classes, in_channels, width_mult, freq_encoding, deep_supervision)
    options = [p for p in inspect.signature(builder).parameters if p not in COMMON]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ModelError(
            f"create_model({name!r}): unknown option(s) {unknown}. Options of {name}: "
            f"{options or 'none'} besides {list(COMMON)}."
        )
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise ModelError(
            f"create_model({name!r}): options {kwargs} are not JSON values ({e}); pass numbers, strings "
            "or lists so the weights file can record them."
        ) from e
    common = dict(  # plain Python types (numpy scalars accepted above), so the kwargs are JSON
        n_classes=int(n_classes),
        in_channels=int(in_channels),
        width_mult=float(width_mult),
        freq_encoding=bool(freq_encoding),
        deep_supervision=bool(deep_supervision),
    )
    model = builder(**common, **kwargs)
    model.fatlib_name = name
    model.fatlib_kwargs = {**common, **kwargs}
    return model
