"""What an exported model carries besides its graph: one JSON document under the key ``ssmad``
(ONNX ``metadata_props``; OpenVINO ``rt_info``), so re-calibrating rewrites no graph.

Fields (layout version 4): ``format`` (the layout's version), ``ssmad_version``, ``preset``,
``model_config`` (its ``image_score``: the rule of the graph's ``score``), ``class_names``, ``geometries`` (``{class: [H, W]}``, the input size of each
class; a graph is traced at one of them), ``rois`` (``{class: [left, top, right, bottom]}``, the box
of the original image each class's images are cropped to, ``ssmad.data.roi``; ``{}``: none), ``tile`` (``{"size", "overlap"}`` or None), ``mean``/``std`` (the encoder's
normalisation, done inside the graph; kept to preprocess tensors the way a checkpoint's
detector does), ``openvino_extension`` (an OpenVINO IR holding the fused scan: the library's file name, kept beside
the IR; else None or absent), ``int8`` (True on an NNCF-quantised IR),
``calibration`` (image and pixel thresholds, normalisation constants, heatmap scales;
``Calibration.to_dict``), ``inputs`` and ``outputs`` (the graph's tensor names).

Versions, as for checkpoints (``ssmad.engine.checkpoint``): a change of the layout bumps
``FORMAT`` and adds one step ``{old: function(metadata) -> metadata of old + 1}`` to
``_MIGRATIONS``, applied in turn by :func:`parse_metadata`; a newer layout than this ssmad
reads is refused, naming the file and the fix (upgrade ssmad). Readers take what they need by
key and ignore keys they do not know. Layout 1 -> 2: the square ``image_size`` becomes every
class's geometry, ``tile`` None. Layout 2 -> 3: each calibration record gains its ``pixel``
threshold, of the default rule ``image`` for an export calibrated before pixel thresholds existed,
and its ``threshold_rule``, ``quantile``; ``rois`` is ``{}``. Layout 3 -> 4: ``model_config``
gains ``image_score``, ``max`` (what the older graph's ``score`` is); its ``outputs`` stay without
``embedding``, so such an export infers no class (export the run again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import ssmad
from ssmad.engine.thresholds import with_image_pixel_thresholds
from ssmad.models.image_score import with_legacy_image_score

METADATA_KEY = "ssmad"
FORMAT = 4
INPUT_NAME = "image"  # (B, 3, H, W) RGB in [0, 1]
OUTPUT_NAMES = ("anomaly_map", "score", "embedding")  # (B, H, W) raw blurred map, (B,) its image score, (B, D) pooled encoder features
EMBEDDING_NAME = OUTPUT_NAMES[2]


def _v1_to_v2(metadata: dict[str, Any]) -> dict[str, Any]:
    """Layout 1 -> 2: ``image_size`` (square) -> ``geometries``; ``tile`` None."""
    side = int(metadata["image_size"])
    rest = {key: value for key, value in metadata.items() if key != "image_size"}
    return {**rest, "geometries": {name: [side, side] for name in metadata["class_names"]}, "tile": None}


def _v2_to_v3(metadata: dict[str, Any]) -> dict[str, Any]:
    """Layout 2 -> 3: every calibration record gets the ``image`` rule's pixel threshold; no
    region of interest."""
    return {**metadata, "calibration": with_image_pixel_thresholds(metadata["calibration"]), "rois": {}}


def _v3_to_v4(metadata: dict[str, Any]) -> dict[str, Any]:
    """Layout 3 -> 4: the graph's score is the map's maximum."""
    return {**metadata, "model_config": with_legacy_image_score(metadata["model_config"])}


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


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
        "geometries": payload["geometries"],
        "rois": payload["rois"],
        "tile": payload["tile"],
        "mean": list(payload["normalization"]["mean"]),
        "std": list(payload["normalization"]["std"]),
        "calibration": payload["calibration"],
        "inputs": [INPUT_NAME],
        "outputs": list(OUTPUT_NAMES),
    }


def parse_metadata(text: str | None, source: str) -> dict[str, Any]:
    """The metadata JSON of ``source``, brought to layout ``FORMAT``; ExportedModelError when it
    is absent, not ssmad's, or of a newer layout."""
    if text is None:
        raise ExportedModelError(
            f"{source} has no ssmad metadata: it is not a model written by 'ssmad export' (export the run again)"
        )
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise ExportedModelError(f"{source}: the ssmad metadata is not valid JSON ({error})") from error
    version = metadata.get("format") if isinstance(metadata, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExportedModelError(
            f"{source}: ssmad metadata of an unknown format {version!r} (this ssmad reads formats 1 to {FORMAT}); "
            "export the run again with this version"
        )
    if version > FORMAT:
        raise ExportedModelError(
            f"{source}: ssmad metadata of format {version}, written by ssmad {metadata.get('ssmad_version')}; "
            f"this ssmad ({ssmad.__version__}) reads formats 1 to {FORMAT}: upgrade ssmad"
        )
    while version < FORMAT:
        metadata = _MIGRATIONS[version](metadata)
        version += 1
    return {**metadata, "format": version}
