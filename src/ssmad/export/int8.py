"""OpenVINO INT8: NNCF post-training quantisation of an exported model (``ssmad export RUN
--format openvino --int8``), its thresholds recomputed on the quantised model.

1. The calibration images: the run's calibration normals (the held-out "val" normals of its
   training data, as ``ssmad calibrate`` takes them), or those of another data root given.
2. NNCF quantises the OpenVINO model read from the ONNX file: with ssmad's extension, the graph
   with the fused scan, which NNCF does not know and leaves in float32; without it, the
   standard graph, the scan's operators kept out of the quantisation. The encoder's and decoder's
   convolutions and matrix products become INT8 (preset "performance": symmetric); kept in float32:
   the scan, and the anomaly map (cosine distance, upsampling and the Gaussian blur's
   convolutions), where an 8-bit grid would show in the map.
3. The quantised model scores the same normals, and :func:`~ssmad.engine.calibration.calibrate`
   makes its thresholds, heatmap scales and class prototypes (from its own embeddings), so its
   decisions follow its own scores.

A run of several geometries is exported as one graph per geometry (``model_HxW.onnx``); each is
quantised on the calibration normals of its own classes, written as ``model-int8_HxW.xml``, and
all of them carry the one calibration made from every class's quantised scores.
NNCF is the optional extra ``ssmad[int8]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ssmad.export.requirements import OPENVINO_HINT, require
from ssmad.export.signal_stack import kept_signal_stack

INT8_HINT = "pip install 'ssmad[int8]'"


def quantize_openvino(run: str | os.PathLike, onnx_path: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None) -> Path:
    """INT8 OpenVINO IR of ``run``'s exported ``onnx_path``, calibrated on the run's calibration
    normals (or those under ``data``); writes ``out`` (.xml + .bin, and the extension's library
    where the scan is fused) and returns its path."""
    nncf = require("nncf", INT8_HINT)
    from ssmad.engine.calibrate_on_normals import calibration_dataset
    from ssmad.engine.checkpoint import load_checkpoint, model_from_checkpoint, stored_geometries, stored_rois
    from ssmad.engine.thresholds import Calibration, calibrate
    from ssmad.export.graph import graph_files, graph_sources, openvino_core, read_for_openvino, save_openvino
    from ssmad.export.loading import read_onnx_metadata
    from ssmad.export.metadata import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAMES

    payload = load_checkpoint(run)
    trained = payload.get("train_config") or {}
    if data is None and trained.get("data") is None:
        raise ValueError(f"{run} does not record its data: pass the calibration images' data root (--calibration-data)")
    model = model_from_checkpoint(payload)
    geometries = stored_geometries(payload)
    normals = calibration_dataset(
        model, data or trained["data"], geometries, trained.get("dataset", "auto"), list(payload["class_names"]),
        trained.get("val_fraction", 0.1), trained.get("seed", 0), rois=stored_rois(payload),
    )
    mean, std = torch.tensor(model.encoder.mean).view(3, 1, 1), torch.tensor(model.encoder.std).view(3, 1, 1)
    images = [np.ascontiguousarray((normals[i]["image"] * std + mean)[None].numpy()) for i in range(len(normals))]
    names = [normals.samples[i].class_name for i in range(len(normals))]

    metadata = read_onnx_metadata(onnx_path)
    onnx_path = Path(onnx_path)
    sources = graph_sources(onnx_path, metadata)
    targets = graph_files(Path(out), list(sources))
    core, library = openvino_core()
    quantized, order, maps, scores, embeddings = {}, [], [], [], []
    for key, source in sources.items():
        chosen = [i for i, name in enumerate(names) if key in ("", str(geometries[name]))]
        ov_model = read_for_openvino(core, library, source)
        with kept_signal_stack():
            quantized[key] = nncf.quantize(
                ov_model, nncf.Dataset([images[i] for i in chosen], lambda image: {INPUT_NAME: image}), subset_size=len(chosen),
                preset=nncf.QuantizationPreset.PERFORMANCE, ignored_scope=_kept_in_float32(nncf),
            )
            compiled = core.compile_model(quantized[key], "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        for i in chosen:
            result = compiled({INPUT_NAME: images[i]})
            order.append(i)
            maps.append(result[compiled.output(OUTPUT_NAMES[0])][0])
            scores.append(result[compiled.output(OUTPUT_NAMES[1])])
            embeddings.append(result[compiled.output(EMBEDDING_NAME)])
    old = Calibration.from_dict(payload["calibration"])
    metadata["calibration"] = calibrate(
        [names[i] for i in order], np.concatenate(scores), maps, old.target_fpr, old.pixel_rule, embeddings=np.concatenate(embeddings),
    ).to_dict()
    metadata["int8"] = True
    metadata["graphs"] = {key: path.name for key, path in targets.items() if key}
    for key, model_int8 in quantized.items():
        save_openvino(model_int8, metadata, library, targets[key])
    return next(iter(targets.values()))


def _kept_in_float32(nncf):
    """The IgnoredScope of what stays float32: every node outside the model's modules, whose names
    the exporter prefixes with "/model/": the input's normalisation and the anomaly map (cosine
    distance, upsampling, the blur's convolutions). The fused scan NNCF leaves alone by itself."""
    return nncf.IgnoredScope(patterns=["^(?!/model/).*"], validate=False)
