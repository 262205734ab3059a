"""Model weights with their metadata: safetensors files that carry the model name, its keyword
arguments, the feature preset and the vocabulary, so a mismatch is caught at load time.

Nothing here unpickles: tensors come from safetensors, metadata from JSON strings.

Every file carries ``sha256``: the SHA-256 of its metadata and tensors (:func:`content_sha256`), checked
whenever its tensors are loaded, so a flipped bit is a WeightsError naming the file instead of a model
that silently scores differently (or NaN). Files saved before the checksum existed still load, with a
warning (once per file) that they are unverified.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from .atomic import atomic_path
from .errors import ModelError, WeightsError
from .preflight import as_os_error

FORMAT_VERSION = "1"
CHECKSUM_KEY = "sha256"  # metadata key of content_sha256 (absent from files saved before it existed)
_RESAVE = "Re-save it with fatlib.checkpoint.save_weights (or retrain that fold)"


class UnverifiedWeightsWarning(UserWarning):
    """A weights file without a checksum (saved by an older fatlib) was loaded unverified."""


def content_sha256(meta: dict[str, str], state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the raw metadata strings (all but the checksum itself) and of every tensor's name,
    dtype, shape and bytes, in name order: independent of the file layout, so it can be checked on
    the loaded tensors."""
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != CHECKSUM_KEY):
        h.update(f"meta|{key}|{meta[key]}|".encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"tensor|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    mel_config: dict[str, Any],
    vocab: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict and its metadata to ``path`` (``.safetensors``) atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "fatlib_format": FORMAT_VERSION,
        "model_name": model_name,
        "model_kwargs": json.dumps(model_kwargs, sort_keys=True),
        "mel_config": json.dumps(mel_config, sort_keys=True),
        "vocab": json.dumps(list(vocab)),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    meta[CHECKSUM_KEY] = content_sha256(meta, state)
    with atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp), metadata=meta)
        except Exception as e:  # safetensors' I/O errors (a full disk) are not OSErrors: make them one line
            raise as_os_error(e, path) from e
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a weights file, decoded: model_name, model_kwargs, mel_config, vocab, extra.
    Their types are checked (a damaged header is a WeightsError naming the file); the tensors are not
    read here (:func:`load_state` checks them against the checksum)."""
    meta = _raw_metadata(path)
    try:
        out = {
            "model_name": meta["model_name"],
            "model_kwargs": json.loads(meta["model_kwargs"]),
            "mel_config": json.loads(meta["mel_config"]),
            "vocab": json.loads(meta["vocab"]),
            "extra": json.loads(meta.get("extra", "{}")),
        }
    except (KeyError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: damaged fatlib metadata ({type(e).__name__}: {e}). {_RESAVE}.") from e
    vocab = out["vocab"]
    wrong = [k for k, typ in (("model_kwargs", dict), ("mel_config", dict), ("extra", dict), ("vocab", list))
             if not isinstance(out[k], typ)]
    if not wrong and not (vocab and all(isinstance(v, str) and v for v in vocab) and len(set(vocab)) == len(vocab)):
        wrong = ["vocab (class names: non-empty, distinct strings)"]
    if wrong:
        raise WeightsError(f"{path}: damaged fatlib metadata: {', '.join(wrong)} of the wrong form. {_RESAVE}.")
    return out


def _raw_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata strings of a fatlib weights file; WeightsError if missing, unreadable or not fatlib's."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found. Train the stage first or fix the path.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, UnicodeDecodeError) as e:  # a damaged header, an unreadable file
        raise WeightsError(
            f"{path}: not a readable safetensors file ({e}). Re-save it with fatlib.checkpoint.save_weights."
        ) from e
    if meta.get("fatlib_format") != FORMAT_VERSION:
        raise WeightsError(
            f"{path}: no fatlib metadata (format {meta.get('fatlib_format')!r}). "
            "Save weights with fatlib.checkpoint.save_weights so the model name, preset and vocabulary travel with them."
        )
    return meta


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, checked against its checksum (WeightsError naming the file when
    they differ: the file was damaged after it was saved). A file without a checksum loads with an
    UnverifiedWeightsWarning."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_metadata(path)  # validates the file first
    meta = _raw_metadata(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise WeightsError(f"{path}: the tensors cannot be read ({e}). {_RESAVE}.") from e
    expected = meta.get(CHECKSUM_KEY)
    if expected is None:
        warnings.warn(f"{path}: unverified (no checksum: saved by an older fatlib); re-save it with "
                      "fatlib.checkpoint.save_weights to have it checked on every load", UnverifiedWeightsWarning,
                      stacklevel=2)
    elif content_sha256(meta, state) != expected:
        raise WeightsError(f"{path}: damaged: its contents differ from the checksum stored when it was saved "
                           "(a changed bit in the tensors or metadata). Copy it again from where it was trained, "
                           "or retrain that fold.")
    return state


def verify_weights(path: str | os.PathLike) -> bool:
    """Check a weights file's metadata and tensors against its checksum (WeightsError naming the file when
    damaged). Returns False for an older file without a checksum (nothing to check), True otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedWeightsWarning)
        load_state(path)
    return CHECKSUM_KEY in _raw_metadata(path)


def check_compatible(
    path: str | os.PathLike,
    meta: dict[str, Any],
    *,
    model_name: str | None = None,
    vocab: Sequence[str] | None = None,
    mel_config: dict[str, Any] | None = None,
) -> None:
    """Raise WeightsError if the weights' model, vocabulary or feature preset differ from those given."""
    if model_name is not None and meta["model_name"] != model_name:
        raise WeightsError(
            f"{path}: weights are for model {meta['model_name']!r}, not {model_name!r}. "
            f"Create the model as {meta['model_name']!r} or point at weights trained for {model_name!r}."
        )
    if vocab is not None and list(vocab) != list(meta["vocab"]):
        mine, theirs = list(vocab), list(meta["vocab"])
        missing = sorted(set(mine) - set(theirs))[:5]
        extra = sorted(set(theirs) - set(mine))[:5]
        detail = (
            f"{len(theirs)} classes in the weights, {len(mine)} in the data"
            + (f"; absent from the weights: {missing}" if missing else "")
            + (f"; absent from the data: {extra}" if extra else "")
            + ("; same classes in another order" if not missing and not extra else "")
        )
        raise WeightsError(
            f"{path}: vocabulary mismatch ({detail}). Use weights trained on this data set's vocabulary "
            "(sample_submission.csv columns)."
        )
    if mel_config is not None:
        diff = {k: (meta["mel_config"].get(k), v) for k, v in mel_config.items() if meta["mel_config"].get(k) != v}
        if diff:
            raise WeightsError(
                f"{path}: feature settings differ from the weights' (weights, requested): {diff}. "
                "Predict with the preset the weights were trained with (stored in the file)."
            )


def check_fits(model: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True) -> dict[str, Any]:
    """Raise WeightsError (as :func:`load_into` would) when the file's tensor names or shapes do not fit
    ``model``, reading only the file's header (no tensor data). Returns the metadata."""
    from safetensors import safe_open

    meta = read_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    _check_shapes(path, meta, {k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes, strict=strict)
    return meta


def _check_shapes(path, meta: dict[str, Any], own: dict[str, tuple], theirs: dict[str, tuple], *, strict: bool) -> None:
    bad = [f"{k}: file {v} vs model {own[k]}" for k, v in theirs.items() if k in own and own[k] != v]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    if bad or (strict and (missing or unexpected)):
        raise WeightsError(
            f"{path}: weights do not fit this model ({meta['model_name']} {meta['model_kwargs']}): "
            + "; ".join(
                ([f"shape mismatch {bad[:3]}"] if bad else [])
                + ([f"missing {missing[:3]}"] if missing else [])
                + ([f"unexpected {unexpected[:3]}"] if unexpected else [])
            )
            + ". Build the model with the name and keyword arguments stored in the file "
            "(fatlib.checkpoint.build_model), or use weights of the same architecture and class count."
        )


def load_into(model: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True) -> dict[str, Any]:
    """Load weights into an existing model; shape or key mismatches raise WeightsError. Returns metadata."""
    meta = read_metadata(path)
    state = load_state(path)
    own = model.state_dict()
    _check_shapes(path, meta, {k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in state.items()},
                  strict=strict)
    model.load_state_dict(state, strict=strict)
    return meta


def build_model(path: str | os.PathLike, **overrides) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Create the registered model the weights were saved from and load them. Returns (model, meta)."""
    from .models import create_model

    meta = read_metadata(path)
    kwargs = {**meta["model_kwargs"], **overrides}
    try:
        model = create_model(meta["model_name"], **kwargs)
    except (ModelError, TypeError, ValueError) as e:  # a model name or options this fatlib cannot build
        raise WeightsError(f"{path}: its metadata names a model this fatlib cannot build ({e}). Use weights "
                           "saved by this fatlib version, or re-save them with a registered model.") from e
    load_into(model, path)
    return model, meta
