"""What an exported model carries besides its graph: one JSON document under the key ``ssmad``
(ONNX ``metadata_props``; OpenVINO ``rt_info``), so re-calibrating rewrites no graph.

Fields: ``format`` (this layout's version), ``ssmad_version``, ``preset``, ``model_config``,
``class_names``, ``image_size``, ``mean``/``std`` (the encoder's normalisation, done inside the
graph; kept to preprocess tensors the way a checkpoint's detector does), ``calibration``
(thresholds, normalisation constants, heatmap scales; ``Calibration.to_dict``), ``inputs`` and
``outputs`` (the graph's tensor names).
"""

from __future__ import annotations

import json
from typing import Any

import ssmad

METADATA_KEY = "ssmad"
FORMAT = 1
INPUT_NAME = "image"  # (B, 3, H, W) RGB in [0, 1]
OUTPUT_NAMES = ("anomaly_map", "score")  # (B, H, W) raw blurred map, (B,) its maximum


class ExportedModelError(ValueError):
    """A file that is not a usable ssmad export (missing, unreadable, or without ssmad metadata)."""


def build_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint payload (``ssmad.engine.checkpoint``)."""
    return {
        "format": FORMAT,
        "ssmad_version": ssmad.__version__,
        "preset": payload["preset"],
        "model_config": payload["model_config"],
        "class_names": list(payload["class_names"]),
        "image_size": int(payload["image_size"]),
        "mean": list(payload["normalization"]["mean"]),
        "std": list(payload["normalization"]["std"]),
        "calibration": payload["calibration"],
        "inputs": [INPUT_NAME],
        "outputs": list(OUTPUT_NAMES),
    }


def parse_metadata(text: str | None, source: str) -> dict[str, Any]:
    """The metadata JSON of ``source``; ExportedModelError when it is absent or not ssmad's."""
    if text is None:
        raise ExportedModelError(
            f"{source} has no ssmad metadata: it is not a model written by 'ssmad export' (export the run again)"
        )
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise ExportedModelError(f"{source}: the ssmad metadata is not valid JSON ({error})") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ExportedModelError(
            f"{source}: ssmad metadata of an unknown format {metadata.get('format') if isinstance(metadata, dict) else None!r} "
            f"(this ssmad reads format {FORMAT}); export the run again with this version"
        )
    return metadata
