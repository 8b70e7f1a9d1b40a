"""The encoder factory: `build_encoder(name, weights)` -> a frozen `FeatureEncoder`.

    encoder = build_encoder("resnet34", weights="imagenet")
    f1, f2, f3 = encoder(images)          # images (B, 3, H, W) normalised with encoder.mean/std
    encoder.feature_info   # [FeatureInfo(64, 4), FeatureInfo(128, 8), FeatureInfo(256, 16)]

Preprocessing: `encoder.mean`/`encoder.std` are ImageNet's unless the weights file is one
recorded in `encoder_weights.KNOWN_PREPROCESSING` (by sha256: the Google Coral MobileNetV2
conversions, mean = std = 0.5), or the caller passes `mean`/`std` explicitly, which wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ssmad.modules.encoder_base import FeatureEncoder, FeatureInfo
from ssmad.modules.encoder_weights import (
    EncoderWeightsError,
    file_sha256,
    load_checked,
    preprocessing_for,
    read_state_dict,
    resolve_weights,
)
from ssmad.modules.mobilenet_v2 import MobileNetV2Encoder, torchvision_keys
from ssmad.modules.resnet import RESNET_SPECS, ResNetEncoder

__all__ = [
    "ENCODER_NAMES",
    "EncoderWeightsError",
    "FeatureEncoder",
    "FeatureInfo",
    "build_encoder",
]

ENCODER_NAMES: tuple[str, ...] = (*RESNET_SPECS, "mobilenet_v2")


def _rgb_triple(value: Sequence[float], what: str) -> tuple[float, float, float]:
    if len(value) != 3:
        raise ValueError(f"{what} must have 3 values (R, G, B), got {tuple(value)}")
    return (float(value[0]), float(value[1]), float(value[2]))


def build_encoder(
    name: str,
    weights: str | Path,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> FeatureEncoder:
    """A frozen encoder `name` with `weights` loaded (see `encoder_weights` for the forms).

    name: resnet18 | resnet34 | resnet50 | wide_resnet50_2 | mobilenet_v2.
    weights: path to a file | directory holding torchvision's file | "imagenet" | "random".
    mean, std: RGB normalisation these weights need, overriding the recorded/ImageNet default.
    Raises ValueError for an unknown name, EncoderWeightsError for a bad weights argument/file.
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    encoder: FeatureEncoder = (
        MobileNetV2Encoder() if name == "mobilenet_v2" else ResNetEncoder(name)
    )
    path = resolve_weights(name, weights)
    if path is not None:
        state_dict = read_state_dict(path)
        if name == "mobilenet_v2":
            state_dict = torchvision_keys(state_dict)
        load_checked(encoder, state_dict, path)
        encoder.weights_source = str(path)
        encoder.weights_sha256 = file_sha256(path)
    preprocessing = preprocessing_for(encoder.weights_sha256)
    encoder.mean = _rgb_triple(mean, "mean") if mean is not None else preprocessing.mean
    encoder.std = _rgb_triple(std, "std") if std is not None else preprocessing.std
    return encoder.freeze()

