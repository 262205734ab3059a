"""Model registry and architectures: ``create_model(name, ...)``, ``list_models()``.

Models: cnn_model_1, vgg16_bn (12th place), xresnet18/34/50 (95th), dense_m1, dense_m2, dense_m3 (9th),
shallow_cnn_3rd, shallow_crnn_3rd, stft1d_3rd (3rd). Input ``(batch, in_channels, n_mels, frames)`` (at
least 32 x 32), output logits ``(batch, n_classes)``.
"""
from __future__ import annotations

from ..errors import ModelError
from . import cnn, dense, rnn, shallow, stft1d, vgg, xresnet  # noqa: F401  (importing registers the builders)
from .base import count_parameters
from .registry import (
    create_model,
    feature_rows_option,
    list_models,
    parameter_counts,
    published_input,
    register_model,
    supports_deep_supervision,
)

__all__ = [
    "ModelError",
    "count_parameters",
    "create_model",
    "feature_rows_option",
    "list_models",
    "parameter_counts",
    "published_input",
    "register_model",
    "supports_deep_supervision",
]
