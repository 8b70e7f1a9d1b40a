"""``convert``: an official MambaAD / Pyramid-Mamba checkpoint -> an ssmad ``AnomalyModel``.

What a converted model computes by default is what the official code computed with these
weights (each preset's ``converted`` settings in ``ssmad.models.presets``), each overridable:

- Pyramid-Mamba: ``pyramid_levels=1``. The official code applies its second pyramid level only
  to maps wider than 64, which never occur at 256x256 input, so its weights were trained with
  P = 1 (the whole map and its four quadrants, averaged); ``pyramid_levels=2`` is the paper's P.
- both: ``map_scale="official"``, the reference framework's anomaly-map scale (the sum over
  scales divided by 9), so maps, scores and thresholds compare with the official code's; and
  ``drop_path_rule="official"`` (training only, for fine-tuning a converted model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssmad.models import AnomalyModel, build_model, get_preset
from ssmad.modules.encoder_weights import file_sha256
from ssmad.official.state_dict import ConvertedState, OfficialCheckpointError, convert_state_dict, read_official_checkpoint

OFFICIAL_ENCODER = "resnet34"  # the official code's net_t in both papers


def convert(
    checkpoint: str | Path,
    preset: str = "mambaad",
    encoder: str = OFFICIAL_ENCODER,
    weights: str | None = None,
    **overrides: Any,
) -> AnomalyModel:
    """Load an official checkpoint into an ssmad model of ``preset`` (eval mode, on the CPU).

    checkpoint: the official ``.pth`` (ADer's ``{"net": ...}`` or a bare state dict).
    encoder: the architecture of the official ``net_t`` (ResNet34 in both papers).
    weights: encoder weights for a checkpoint without ``net_t`` keys (a file, a folder holding
        torchvision's file, "imagenet" or "random"); a checkpoint with them uses its own.
    overrides: ModelConfig fields, applied over the preset's ``converted`` settings (e.g. pyramid_levels=2).
    Raises OfficialCheckpointError naming the file and key of anything that does not fit.
    """
    converted_settings = get_preset(preset).converted
    for field, option in (("encoder", "--encoder / encoder="), ("encoder_weights", "--weights / weights=")):
        if field in overrides:
            raise ValueError(f"the encoder is chosen with {option}, not with a '{field}' setting")
    path = Path(checkpoint)
    state_dict = read_official_checkpoint(path)
    has_encoder = any(key.startswith("net_t.") for key in state_dict)
    if has_encoder and weights is not None:
        raise OfficialCheckpointError(
            f"{path} holds its encoder (net_t.*), which the model uses: drop --weights {weights}"
        )
    if not has_encoder and weights is None:
        raise OfficialCheckpointError(
            f"{path} holds no encoder (no net_t.* keys): pass the encoder weights it was trained with, "
            "e.g. --weights imagenet (torchvision's ImageNet file), a file or folder, or --weights random"
        )
    settings = {**converted_settings, **overrides, "encoder": encoder, "encoder_weights": weights or "random"}
    model = build_model(preset, **settings)
    converted = convert_state_dict(state_dict, model.config, model.trainable_state_dict(), str(path))
    _load(model, converted, path)
    return model.eval()


def _load(model: AnomalyModel, converted: ConvertedState, path: Path) -> None:
    model.load_trainable_state_dict(converted.trainable)
    if converted.encoder is None:
        return
    own = model.encoder.state_dict()
    missing = [k for k in own if k not in converted.encoder and not k.endswith("num_batches_tracked")]
    unexpected = [f"net_t.{k}" for k in converted.encoder if k not in own]
    mis_shaped = [f"net_t.{k}" for k, v in converted.encoder.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        example = (missing or unexpected or mis_shaped)[0]
        raise OfficialCheckpointError(
            f"{path}: the encoder (net_t.*) is not a {model.config.encoder}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mis_shaped)} mis-shaped key(s), e.g. {example}; "
            "pass --encoder with the architecture it was trained with"
        )
    model.encoder.load_state_dict({**own, **converted.encoder})
    model.encoder.weights_source = str(path)
    model.encoder.weights_sha256 = file_sha256(path)
