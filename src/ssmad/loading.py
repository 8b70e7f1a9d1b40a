"""``ssmad.load``: a trained run or an exported model -> a :class:`~ssmad.engine.detector.Detector`."""

from __future__ import annotations

import os
from pathlib import Path

EXPORTED_SUFFIXES = (".onnx", ".xml")  # ONNX (onnxruntime), OpenVINO IR


def load(path: str | os.PathLike, device: str = "auto", pixel_threshold: float | None = None, min_area: int | None = None):
    """A run folder or ``checkpoint.pt`` (PyTorch on ``device``), a ``.onnx`` file (onnxruntime;
    its CUDA provider when ``device`` is auto or cuda and it is installed) or an OpenVINO ``.xml``
    (OpenVINO on CPU), as a Detector with the same ``predict``. ``pixel_threshold`` (None: each
    class's calibrated one) and ``min_area`` (pixels of the original image; None: the default,
    ``ssmad.metrics.defect_regions.DEFAULT_MIN_AREA``) make its defect masks and regions
    (``Detector.set_pixel_decision``)."""
    if Path(path).suffix.lower() in EXPORTED_SUFFIXES:
        from ssmad.export import load_exported

        detector = load_exported(path, device)
    else:
        from ssmad.engine.detector import Detector

        detector = Detector.from_checkpoint(path, device)
    if min_area is None:
        detector.set_pixel_decision(pixel_threshold)
    else:
        detector.set_pixel_decision(pixel_threshold, min_area)
    return detector
