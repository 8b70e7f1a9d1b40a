"""Exported models as detectors: ``ssmad.load("model.onnx")`` or ``ssmad.load("model.xml")``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ssmad.data.geometry import Geometry
from ssmad.engine.checkpoint import stored_geometries, stored_rois
from ssmad.engine.detector import Detector
from ssmad.engine.device import AUTO_DEVICE
from ssmad.engine.thresholds import Calibration
from ssmad.engine.tiling import TileSettings
from ssmad.export.engines import GeometryEngine, OnnxRuntimeEngine, OpenVinoEngine
from ssmad.export.metadata import METADATA_KEY, ExportedModelError, parse_metadata
from ssmad.export.requirements import OPENVINO_HINT, require


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ssmad metadata of an ONNX file; ExportedModelError for a missing, unreadable or foreign file."""
    onnx = require("onnx")
    path = _existing(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ExportedModelError(f"{path} is not a readable ONNX model ({type(error).__name__}: {error})") from error
    props = {prop.key: prop.value for prop in model.metadata_props}
    return parse_metadata(props.get(METADATA_KEY), str(path))


def read_openvino_metadata(model, source: str) -> dict[str, Any]:
    """The ssmad metadata stored in an OpenVINO model's rt_info."""
    if not model.has_rt_info([METADATA_KEY]):
        return parse_metadata(None, source)
    return parse_metadata(model.get_rt_info([METADATA_KEY]).astype(str), source)


def load_exported(path: str | os.PathLike, device: str = AUTO_DEVICE) -> Detector:
    """A Detector running an exported model: ``.onnx`` in onnxruntime, ``.xml`` in OpenVINO (CPU);
    a run of several geometries is one file per geometry (metadata ``graphs``), loaded together
    from any of them."""
    path = _existing(path)
    engine, metadata = _read(path, device)
    graphs = metadata.get("graphs") or {}
    if len(graphs) <= 1:
        return detector_from_metadata(engine, metadata)
    engines = {}
    for key, name in graphs.items():
        engines[Geometry.parse(key).hw] = engine if name == path.name else _read(_existing(path.with_name(name)), device)[0]
    return detector_from_metadata(GeometryEngine(engines), metadata)


def _read(path: Path, device: str):
    """(engine, metadata) of one exported file."""
    if path.suffix.lower() == ".xml":
        core, model = read_openvino(path)
        metadata = read_openvino_metadata(model, str(path))
        return OpenVinoEngine(model, metadata["mean"], metadata["std"], core), metadata
    metadata = read_onnx_metadata(path)
    return OnnxRuntimeEngine(path, metadata["mean"], metadata["std"], device), metadata


def read_openvino(path: Path):
    """(Core, Model) of the IR at ``path``, with ssmad's extension added from the library beside it
    when there is one (an IR with the fused scan needs it)."""
    from ssmad.export.openvino_ext import LIBRARY_NAME

    core = require("openvino", OPENVINO_HINT).Core()
    library = path.with_name(LIBRARY_NAME)
    if library.is_file():
        try:
            core.add_extension(str(library))
        except RuntimeError as error:
            raise ExportedModelError(
                f"{library} (ssmad's OpenVINO extension beside {path.name}) does not load here, e.g. built for another "
                f"OpenVINO version: export the run again with 'ssmad export --format openvino' ({error})"
            ) from error
    try:
        return core, core.read_model(str(path))
    except RuntimeError as error:
        hint = f" (an IR with ssmad's fused scan needs {LIBRARY_NAME} beside it, as 'ssmad export' wrote it)" if "RoutedScan" in str(error) else ""
        raise ExportedModelError(f"{path} is not a readable OpenVINO model{hint}: {error}") from error


def detector_from_metadata(engine, metadata: dict[str, Any]) -> Detector:
    """A Detector of ``engine`` with the calibration, classes and preprocessing of ``metadata``."""
    return Detector(
        engine, Calibration.from_dict(metadata["calibration"]), list(metadata["class_names"]),
        stored_geometries(metadata), metadata["mean"], metadata["std"], metadata["preset"],
        TileSettings.from_dict(metadata.get("tile")), stored_rois(metadata), metadata["model_config"]["image_score"],
    )


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ExportedModelError(f"no exported model at {path}: give the .onnx (or OpenVINO .xml) that 'ssmad export' wrote")
    return path
