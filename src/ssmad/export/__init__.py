"""ssmad.export: deploy without PyTorch. ``export_onnx(run)`` writes an ONNX model whose graph
computes the anomaly map and score of RGB images in [0, 1], with calibration and settings in its
metadata; ``export_openvino`` converts it to OpenVINO IR; ``load_exported`` runs either behind the
same :class:`~ssmad.engine.detector.Detector` as a checkpoint. onnx, onnxruntime (and openvino)
are the optional extra ``ssmad[export]``, imported on first use."""

from ssmad.export.graph import FORMATS, export_onnx, export_openvino
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
    "read_onnx_metadata",
]
