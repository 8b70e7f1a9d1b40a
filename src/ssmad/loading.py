"""``ssmad.load``: a trained run or an exported model -> a :class:`~ssmad.engine.detector.Detector`."""

from __future__ import annotations

import os
from pathlib import Path

EXPORTED_SUFFIXES = (".onnx", ".xml")  # ONNX (onnxruntime), OpenVINO IR


def load(path: str | os.PathLike, device: str = "auto"):
    """A run folder or ``checkpoint.pt`` (PyTorch on ``device``), a ``.onnx`` file (onnxruntime;
    its CUDA provider when ``device`` is auto or cuda and it is installed) or an OpenVINO ``.xml``
    (OpenVINO on CPU), as a Detector with the same ``predict``."""
    if Path(path).suffix.lower() in EXPORTED_SUFFIXES:
        from ssmad.export import load_exported

        return load_exported(path, device)
    from ssmad.engine.detector import Detector

    return Detector.from_checkpoint(path, device)
