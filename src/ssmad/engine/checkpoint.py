"""Checkpoint files: atomic writes and validated reads.

A checkpoint is one ``torch.save`` file holding plain Python values and tensors (so it loads
with ``weights_only=True``):

- ``format``/``format_version``/``ssmad_version``: what wrote it;
- ``preset`` and ``model_config`` (``ModelConfig.to_dict()``);
- ``encoder``: name, weights source (file name) and sha256 of the weights file;
- ``encoder_state`` and ``trainable_state``: the frozen encoder's and the bottleneck+decoder's
  weights (the encoder is stored too, so a checkpoint is self-contained even when the encoder
  was randomly initialised);
- ``class_names``, ``normalization`` (mean, std), ``image_size``;
- ``calibration``: thresholds and heatmap scales (``None`` until training has finished);
- ``train_config``, ``progress`` and, for ``--resume``, ``optimizer`` and ``rng`` states.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ssmad.engine.atomic_write import atomic_write_bytes

FORMAT = "ssmad-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"  # the checkpoint file inside a run folder


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not an ssmad checkpoint, or does not fit."""


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically (:mod:`ssmad.engine.atomic_write`).

    A crash, a kill or a full disk while writing leaves the previous file at ``path`` untouched
    (a full disk raises ``FileWriteError`` saying so); a temporary file a killed writer left is
    removed by the next write.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, expected_preset: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; raise :class:`CheckpointError` naming the file and the fix."""
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
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer ssmad ({payload.get('ssmad_version')}); upgrade ssmad"
        )
    if expected_preset is not None and payload["preset"] != expected_preset:
        raise CheckpointError(
            f"{path} holds a '{payload['preset']}' model, not '{expected_preset}': "
            f"use --preset {payload['preset']} or another run folder"
        )
    return payload

