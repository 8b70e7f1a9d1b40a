"""``ssmad export``: a finished run -> an ONNX model (and OpenVINO IR) with its metadata.

The graph is the PyTorch model's own forward, traced: RGB images (B, 3, H, W) in [0, 1] at the
run's input size (dynamic batch) -> the encoder's normalisation -> ``AnomalyModel.anomaly_map``
-> ``anomaly_map`` (B, H, W), the raw blurred map, ``score`` (B,), its image score by the run's
rule, and ``embedding`` (B, D), the pooled encoder features a class is inferred from
(``ssmad.engine.class_inference``). While tracing, SS2D's
routed scan runs the PyTorch backend (``ssmad.ops.scan_torch``), which exports it as one node
``ssmad::RoutedScan`` defined by a model-local ONNX function of standard operators
(``scan_function``: a ``Scan`` over blocks of steps; no loop over the sequence is unrolled).
Calibration and the rest go into the metadata (``metadata``).

One graph per geometry: the scan's routes are constants of the map's height and width, so a graph
has a fixed spatial size. A run whose classes have several geometries is written as one file per
geometry (``model_HxW.onnx`` beside the name asked for), each carrying the same metadata, whose
``graphs`` (``{"HxW": file name}``) tells ``ssmad.load`` which classes use which; loaded from any
of them, the files are one detector.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from ssmad.engine.atomic_write import atomic_write_bytes
from ssmad.engine.class_inference import pooled_embedding
from ssmad.engine.checkpoint import CheckpointError, load_checkpoint, stored_geometries
from ssmad.engine.checkpoint import model_from_checkpoint
from ssmad.export.metadata import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, build_metadata
from ssmad.export.requirements import OPENVINO_HINT, require
from ssmad.export.scan_function import routed_scan_function
from ssmad.ops.scan_torch import SCAN_DOMAIN

FORMATS = ("onnx", "openvino")
DEFAULT_OPSET = 17
OPSETS = range(13, 21)  # ONNX opsets the exporter writes and the scan function is built for


class ExportGraph(nn.Module):
    """RGB images (B, 3, H, W) in [0, 1] -> (anomaly_map (B, H, W), score (B,), embedding (B, D)) of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(model.encoder.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.encoder.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc, dec = self.model((image - self.mean) / self.std)
        maps, scores = self.model.anomaly_map_from_features(enc, dec, tuple(image.shape[-2:]))
        return maps, scores, pooled_embedding(enc)


def export_onnx(run: str | os.PathLike, out: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Write the ONNX model of a finished run (default ``RUN/model.onnx``; with several geometries
    one ``model_HxW.onnx`` per geometry); returns the path of the first file."""
    payload = load_checkpoint(run)
    if payload["calibration"] is None:
        raise CheckpointError(f"{run} is an unfinished training run (no calibration yet): finish it with 'ssmad train --resume'")
    out = Path(out) if out else _run_dir(run) / "model.onnx"
    geometries = sorted(set(stored_geometries(payload).values()))
    files = graph_files(out, [str(geometry) for geometry in geometries])
    metadata = {**build_metadata(payload), "graphs": {key: path.name for key, path in files.items()}}
    graph = ExportGraph(model_from_checkpoint(payload))
    out.parent.mkdir(parents=True, exist_ok=True)
    for geometry, path in zip(geometries, files.values()):
        model = to_onnx(graph, torch.rand(2, 3, *geometry.hw), [INPUT_NAME], list(OUTPUT_NAMES), opset)
        require("onnx").helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
        model.producer_name, model.producer_version = "ssmad", metadata["ssmad_version"]
        atomic_write_bytes(path, model.SerializeToString())
    return next(iter(files.values()))


def graph_files(out: Path, geometries: list[str]) -> dict[str, Path]:
    """``{"HxW": path}``: ``out`` itself for one geometry, else ``out``'s stem + ``_HxW`` per geometry."""
    if len(geometries) == 1:
        return {geometries[0]: out}
    return {key: out.with_name(f"{out.stem}_{key}{out.suffix}") for key in geometries}


def to_onnx(module: nn.Module, example: torch.Tensor, input_names: list[str], output_names: list[str], opset: int = DEFAULT_OPSET):
    """The checked ONNX ModelProto of ``module`` (eval mode) traced on ``example``, its first axis
    dynamic in every input and output; the ``ssmad::RoutedScan`` nodes stay function calls, the
    function's standard-operator body in the model's ``functions`` (see :func:`inlined`)."""
    onnx = require("onnx")
    if opset not in OPSETS:
        raise ValueError(f"opset {opset} is not supported: use {OPSETS.start}..{OPSETS.stop - 1}")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic and the exporter's deprecation notice
        torch.onnx.export(
            module.eval(), (example,), buffer, dynamo=False, opset_version=opset,
            input_names=input_names, output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in (*input_names, *output_names)},
            custom_opsets={SCAN_DOMAIN: 1},
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.functions.append(routed_scan_function(opset))
    onnx.checker.check_model(model)
    return model


def inlined(model):
    """``model`` (an ONNX ModelProto) with its ``ssmad::RoutedScan`` calls replaced by the function's
    body: standard operators in the graph itself, for runtimes without model-local functions
    (OpenVINO without ssmad's extension)."""
    model = require("onnx.inliner").inline_local_functions(model)
    kept = [entry for entry in model.opset_import if entry.domain != SCAN_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def export_openvino(onnx_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """OpenVINO IR (``.xml`` + ``.bin``, float32 weights) of an exported ONNX model, its metadata
    copied into the IR's ``rt_info``; returns the ``.xml`` path.

    With ssmad's OpenVINO extension (built here at first use, ``ssmad.export.openvino_ext``) the
    scan is its fused operator and the compiled library is written beside the IR
    (``libssmad_openvino.so``; metadata ``openvino_extension``), which OpenVINO needs to read it
    (``core.add_extension(path)``); without it, a warning, and the standard-operator scan."""
    from ssmad.export.loading import read_onnx_metadata

    onnx_path = Path(onnx_path)
    metadata = read_onnx_metadata(onnx_path)
    core, library = openvino_core()
    sources = graph_sources(onnx_path, metadata)
    targets = graph_files(Path(out) if out else onnx_path.with_suffix(".xml"), list(sources))
    metadata = {**metadata, "graphs": {key: path.name for key, path in targets.items() if key}}
    for key, source in sources.items():
        save_openvino(read_for_openvino(core, library, source), metadata, library, targets[key])
    return next(iter(targets.values()))


def graph_sources(onnx_path: Path, metadata: dict) -> dict[str, Path]:
    """``{"HxW": path}`` of the exported ONNX files of ``onnx_path``'s run (its metadata's
    ``graphs``), or ``{"": onnx_path}`` for a run of one geometry."""
    return {key: onnx_path.with_name(name) for key, name in metadata.get("graphs", {}).items()} or {"": onnx_path}


def read_for_openvino(core, library: Path | None, onnx_path: str | os.PathLike):
    """The OpenVINO model of an exported ONNX file: with the fused scan where ``core`` has the
    extension (``library``), else from the file with its scan function inlined."""
    return core.read_model(str(onnx_path)) if library else core.read_model(_inlined_bytes(onnx_path))


def save_openvino(model, metadata: dict, library: Path | None, out: Path) -> Path:
    """Write ``model`` as IR at ``out`` with ``metadata`` (plus ``openvino_extension``) in its
    rt_info, and the extension's ``library`` beside it when the model uses it; returns ``out``."""
    from ssmad.export.openvino_ext import LIBRARY_NAME

    metadata = {**metadata, "openvino_extension": LIBRARY_NAME if library else None}
    model.set_rt_info(json.dumps(metadata), [METADATA_KEY])
    out.parent.mkdir(parents=True, exist_ok=True)
    require("openvino", OPENVINO_HINT).save_model(model, str(out), compress_to_fp16=False)
    if library:
        shutil.copyfile(library, out.with_name(LIBRARY_NAME))
    return out


def openvino_core():
    """(an OpenVINO Core with ssmad's extension added, the library's path), or (a plain Core, None)
    with a warning saying why the extension is unavailable and that the standard graph is used."""
    ov = require("openvino", OPENVINO_HINT)
    from ssmad.export.openvino_ext import OpenVinoExtensionError, extension_library

    core = ov.Core()
    try:
        library = extension_library()
    except OpenVinoExtensionError as error:
        warnings.warn(f"{error}; OpenVINO runs the scan as standard operators (correct, several times slower)", stacklevel=3)
        return core, None
    core.add_extension(str(library))
    return core, library


def _inlined_bytes(onnx_path: str | os.PathLike) -> bytes:
    """The ONNX model at ``onnx_path`` with its scan function inlined (:func:`inlined`), serialised."""
    return inlined(require("onnx").load(str(onnx_path))).SerializeToString()


def _run_dir(run: str | os.PathLike) -> Path:
    return Path(run) if Path(run).is_dir() else Path(run).parent
