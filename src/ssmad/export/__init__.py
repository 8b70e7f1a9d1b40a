"""ssmad.export: deploy without PyTorch. ``export_onnx(run)`` writes an ONNX model whose graph
computes the anomaly map and score of RGB images in [0, 1], with calibration and settings in its
metadata; ``export_openvino`` converts it to OpenVINO IR, with ssmad's fused scan where its
extension builds (``ssmad.export.openvino_ext``: the artifacts and how to load them);
``quantize_openvino`` makes an INT8 IR (``ssmad.export.int8``); ``load_exported`` runs any of them
behind the same :class:`~ssmad.engine.detector.Detector` as a checkpoint. onnx and onnxruntime
are the optional extra ``ssmad[export]`` (openvino ``ssmad[openvino]``, NNCF ``ssmad[int8]``),
imported on first use."""

from ssmad.export.graph import FORMATS, export_onnx, export_openvino
from ssmad.export.int8 import quantize_openvino
from ssmad.export.loading import load_exported, read_onnx_metadata
from ssmad.export.metadata import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, ExportedModelError

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "ExportedModelError",
    "export_onnx",
    "export_openvino",
    "load_exported",
    "quantize_openvino",
    "read_onnx_metadata",
]
