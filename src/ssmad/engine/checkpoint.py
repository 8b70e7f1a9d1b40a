"""The checkpoint: its schema, the one function that builds it, atomic writes, validated and
migrated reads, and the model it holds.

A checkpoint is one ``torch.save`` file of plain Python values and tensors (it loads with
``weights_only=True``). Schema version 5 (``format_version``):

- ``format`` (``"ssmad-checkpoint"``), ``format_version``, ``ssmad_version``: what wrote it;
- ``preset`` and ``model_config`` (``ModelConfig.to_dict()``, its ``image_score`` the rule the
  image scores and thresholds are computed by);
- ``encoder``: name, weights source (file name) and sha256 of the weights file;
- ``encoder_state`` and ``trainable_state``: the frozen encoder's and the bottleneck+decoder's
  weights (the encoder is stored too, so a checkpoint is self-contained even when the encoder
  was randomly initialised);
- ``class_names``, ``normalization`` (mean, std);
- ``geometries``: ``{class: [H, W]}``, the input size of each class (``ssmad.data.geometry``), and
  ``size_rule``: the ``--image-size`` text they came from (``"256"``, ``"1248x512"``, ``"long:640"``);
- ``rois``: ``{class: [left, top, right, bottom]}``, the box of the original image each class's
  images are cropped to (``ssmad.data.roi``; ``{}``: no region of interest);
- ``tile``: ``{"size": T, "overlap": O}`` when the classes' images are scored in tiles, else ``None``;
- ``calibration``: image and pixel thresholds and heatmap scales (``Calibration.to_dict()``;
  every class's, and the global, record carries its ``pixel`` threshold; ``prototypes``: each
  class's prototype for inferring an image's class, ``ssmad.engine.class_inference``; ``None``
  until training has finished);
- ``train_config`` (``TrainConfig.to_dict()``), ``progress`` (epoch, step_in_epoch,
  global_step, epoch_losses, step_losses, finished, world_size);
- ``data_files``: the usable and rejected training files (``None`` for a converted model);
- ``converted_from``: the official file a converted model came from (``None`` for a trained run);
- ``budget``: a ``--time-budget`` run's budget, the time spent, its plans and the realised steps
  and epochs (``BudgetPlanner.record``); ``None`` otherwise;
- ``optimizer``, ``scaler``, ``rng`` (one state per process): only in an UNFINISHED run, which
  ``ssmad train --resume`` continues. A finished run leaves them out (schema 1 kept them: the
  AdamW moments alone are twice the trainable weights).

Versions: every change of the schema bumps ``SCHEMA_VERSION`` and adds one step to
``_MIGRATIONS`` (``{old_version: function(payload) -> payload of old_version + 1}``), applied in
turn by :func:`load_checkpoint`, so a checkpoint of any earlier version still loads. A checkpoint
of a newer version than this ssmad's is refused, naming the file and the fix (upgrade ssmad).
Readers take what they need by key and ignore keys they do not know.

Version 1 -> 2: a finished run drops ``optimizer``, ``scaler`` and ``rng``; ``data_files`` and
``converted_from`` are present in every checkpoint (``None`` where they do not apply).
Version 2 -> 3: the square ``image_size`` (also in ``model_config``) becomes one geometry per
class, ``size_rule`` its text, ``tile`` None.
Version 3 -> 4: each calibration record gains its ``pixel`` threshold, of the default rule
``image`` (the image threshold) for a run calibrated before pixel thresholds existed, and its
``threshold_rule``, ``quantile`` (the image threshold rule before ``conformal``); ``rois`` is
``{}`` and ``budget`` None.
Version 4 -> 5: ``model_config`` gains ``image_score``, ``max`` for a run scored before the rule
existed; a calibration without ``prototypes`` infers no class (``ssmad calibrate`` records them).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

import ssmad
from ssmad.data.geometry import Geometry
from ssmad.data.roi import Roi, rois_from_lists, rois_to_lists
from ssmad.engine.atomic_write import atomic_write_bytes
from ssmad.engine.thresholds import with_image_pixel_thresholds
from ssmad.models.image_score import with_legacy_image_score

FORMAT = "ssmad-checkpoint"
SCHEMA_VERSION = 5
CHECKPOINT_NAME = "checkpoint.pt"  # the checkpoint file inside a run folder
RESUME_KEYS = ("optimizer", "scaler", "rng")  # what only an unfinished run carries


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not an ssmad checkpoint, or does not fit."""


def progress_record(
    epoch: int = 0,
    step_in_epoch: int = 0,
    global_step: int = 0,
    epoch_losses: list[float] | None = None,
    step_losses: list[float] | None = None,
    finished: bool = False,
    world_size: int = 1,
) -> dict[str, Any]:
    """The ``progress`` entry: where training stands (a converted model: finished at step 0)."""
    return {
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "epoch_losses": list(epoch_losses or []),
        "step_losses": list(step_losses or []),
        "finished": finished,
        "world_size": world_size,
    }


def build_payload(
    model: torch.nn.Module,
    preset: str,
    class_names: list[str],
    train_config: dict[str, Any],
    progress: dict[str, Any],
    geometries: Mapping[str, Geometry],
    size_rule: str,
    tile: dict[str, int] | None = None,
    calibration: dict[str, Any] | None = None,
    resume_state: dict[str, Any] | None = None,
    data_files: dict[str, Any] | None = None,
    converted_from: dict[str, Any] | None = None,
    rois: Mapping[str, Roi] | None = None,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of ``model`` (an ``AnomalyModel``), as the module docstring lays it out.

    resume_state: ``{"optimizer", "scaler", "rng"}`` of an unfinished run; required when
    ``progress["finished"]`` is False and left out of a finished run.
    """
    finished = bool(progress["finished"])
    if not finished and resume_state is None:
        raise ValueError("an unfinished run's checkpoint needs its optimizer, scaler and rng states")
    encoder = model.encoder
    payload = {
        "ssmad_version": ssmad.__version__,
        "preset": preset,
        "model_config": model.config.to_dict(),
        "encoder": {
            "name": model.config.encoder,
            "weights_source": Path(encoder.weights_source).name,
            "weights_sha256": encoder.weights_sha256,
        },
        "encoder_state": encoder.state_dict(),
        "trainable_state": model.trainable_state_dict(),
        "class_names": list(class_names),
        "normalization": {"mean": list(encoder.mean), "std": list(encoder.std)},
        "geometries": {name: list(geometry.hw) for name, geometry in geometries.items()},
        "size_rule": size_rule,
        "rois": rois_to_lists(rois or {}),
        "tile": tile,
        "calibration": calibration,
        "train_config": train_config,
        "progress": progress,
        "data_files": data_files,
        "converted_from": converted_from,
        "budget": budget,
    }
    if not finished:
        payload.update({key: resume_state[key] for key in RESUME_KEYS})
    return payload


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` (from :func:`build_payload` or :func:`load_checkpoint`) to ``path`` atomically.

    A crash, a kill or a full disk while writing leaves the previous file at ``path`` untouched
    (a full disk raises ``FileWriteError`` saying so); a temporary file a killed writer left is
    removed by the next write.
    """
    buffer = io.BytesIO()
    torch.save({**payload, "format": FORMAT, "format_version": SCHEMA_VERSION}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: a finished run without its resume states; data_files/converted_from always present."""
    if payload["progress"]["finished"]:
        payload = {key: value for key, value in payload.items() if key not in RESUME_KEYS}
    return {"data_files": None, "converted_from": None, **payload}


def _v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3: the square ``image_size`` becomes every class's geometry."""
    side = int(payload["image_size"])
    model_config = {key: value for key, value in payload["model_config"].items() if key != "image_size"}
    rest = {key: value for key, value in payload.items() if key != "image_size"}
    geometries = {name: [side, side] for name in payload["class_names"]}
    return {**rest, "model_config": model_config, "geometries": geometries, "size_rule": str(side), "tile": None}


def _v3_to_v4(payload: dict[str, Any]) -> dict[str, Any]:
    """Schema 3 -> 4: every calibration record gets the ``image`` rule's pixel threshold; no
    region of interest, no time budget."""
    return {**payload, "calibration": with_image_pixel_thresholds(payload["calibration"]), "rois": {}, "budget": None}


def _v4_to_v5(payload: dict[str, Any]) -> dict[str, Any]:
    """Schema 4 -> 5: the image score of a run written before the rule existed is the maximum."""
    return {**payload, "model_config": with_legacy_image_score(payload["model_config"])}


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5,
}


def stored_geometries(payload: dict[str, Any]) -> dict[str, Geometry]:
    """``{class: Geometry}`` of a loaded checkpoint (or export metadata)."""
    return {name: Geometry(*hw) for name, hw in payload["geometries"].items()}


def stored_rois(payload: dict[str, Any]) -> dict[str, Roi]:
    """``{class: Roi}`` of a loaded checkpoint (or export metadata)."""
    return rois_from_lists(payload["rois"])


def migrate(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """``payload`` of any schema up to :data:`SCHEMA_VERSION`, brought to that version."""
    version = payload.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid checkpoint format_version {version!r}; retrain or convert again")
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} is a checkpoint of schema {version}, written by ssmad {payload.get('ssmad_version')}; "
            f"this ssmad ({ssmad.__version__}) reads schema {SCHEMA_VERSION} and earlier: upgrade ssmad"
        )
    while version < SCHEMA_VERSION:
        payload = _MIGRATIONS[version](payload)
        version += 1
    return {**payload, "format_version": version}


def load_checkpoint(path: str | os.PathLike, expected_preset: str | None = None) -> dict[str, Any]:
    """Read, validate and migrate a checkpoint; raise :class:`CheckpointError` naming the file and the fix."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: pass a run folder written by 'ssmad train' or its checkpoint.pt"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path} is truncated or is not a checkpoint ({type(error).__name__}: {error}); "
            "copy it again or retrain"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not an ssmad checkpoint")
    payload = migrate(payload, path)
    if expected_preset is not None and payload["preset"] != expected_preset:
        raise CheckpointError(
            f"{path} holds a '{payload['preset']}' model, not '{expected_preset}': "
            f"use --preset {payload['preset']} or another run folder"
        )
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the ``AnomalyModel`` of a loaded checkpoint with its stored encoder and trained weights."""
    from ssmad.models import ModelConfig, build_model

    config = ModelConfig.from_dict({**payload["model_config"], "encoder_weights": "random"})
    model = build_model(config)
    try:
        model.encoder.load_state_dict(payload["encoder_state"])
        model.load_trainable_state_dict(payload["trainable_state"])
    except RuntimeError as error:
        raise CheckpointError(
            f"the checkpoint's weights do not fit its '{payload['preset']}' model ({error}); "
            "it was written by an incompatible ssmad version or edited"
        ) from error
    identity = payload["encoder"]
    model.encoder.weights_source = identity["weights_source"]
    model.encoder.weights_sha256 = identity["weights_sha256"]
    model.encoder.mean = tuple(payload["normalization"]["mean"])
    model.encoder.std = tuple(payload["normalization"]["std"])
    return model
