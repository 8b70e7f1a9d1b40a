"""Engines that run an exported model behind a :class:`~ssmad.engine.detector.Detector`.

Each takes normalised images (B, 3, H, W), as the PyTorch engine does, undoes the normalisation
(the graph normalises itself) and returns maps (B, H, W) and scores (B,) as float32 arrays;
``embed`` returns the pooled encoder features (B, D) a class is inferred from
(``ssmad.engine.class_inference``), running the encoder's part of the graph only, where
``has_embedding`` (an export written before the graph had them has not). Both run with as many threads as PyTorch
(``torch.get_num_threads()``, i.e. OMP_NUM_THREADS).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ssmad.export.metadata import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAMES
from ssmad.export.requirements import require
from ssmad.export.signal_stack import kept_signal_stack


class _Unnormalize:
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Normalised (B, 3, H, W) -> RGB in [0, 1], float32 (B, 3, H, W)."""
        return np.ascontiguousarray((images.detach().float().cpu() * self.std + self.mean).numpy())


class OnnxRuntimeEngine:
    """An ONNX model in onnxruntime: CUDA provider for ``device`` auto/cuda when installed, else CPU."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, mean: tuple[float, ...], std: tuple[float, ...], device: str = "auto"):
        ort = require("onnxruntime")
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ValueError("--device cuda needs onnxruntime's CUDA provider: pip install onnxruntime-gpu")
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Smaller work blocks for the scan's many mid-sized per-step operators: 1.2-1.7x images/s at
        # batch 8 on 2 threads for a graph alone in its process, unchanged at batch 1 (docs/export.md, Speed).
        options.add_session_config_entry("session.dynamic_block_base", "4")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.has_embedding = EMBEDDING_NAME in {output.name for output in self.session.get_outputs()}
        self.encoder = ort.InferenceSession(_encoder_part(path), options, providers=providers) if self.has_embedding else None
        self.unnormalize = _Unnormalize(mean, std)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run(list(OUTPUT_NAMES[:2]), {INPUT_NAME: self.unnormalize(images)})
        return maps, scores

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return self.encoder.run([EMBEDDING_NAME], {INPUT_NAME: self.unnormalize(images)})[0]


def _encoder_part(path: str | os.PathLike) -> bytes:
    """The serialised sub-graph from the image to the embedding: onnxruntime computes every node
    of a session whatever outputs are asked for (a 256-px image's embedding: ~3 s from the whole
    graph, 0.02 s from this part, measured on 2 CPU cores)."""
    onnx = require("onnx")
    onnx_utils = require("onnx.utils")
    part = onnx_utils.Extractor(onnx.load(str(path))).extract_model([INPUT_NAME], [EMBEDDING_NAME])
    return part.SerializeToString()


class OpenVinoEngine:
    """An OpenVINO model (IR or ONNX) compiled for the CPU by ``core`` (the Core that read it, which
    holds the extensions its operators come from) in float32 (an INT8 model's quantised parts stay int8)."""

    name = "openvino"

    def __init__(self, model, mean: tuple[float, ...], std: tuple[float, ...], core):
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        self.core = core
        embedding = [output for output in model.outputs if EMBEDDING_NAME in output.get_names()]
        with kept_signal_stack():
            self.compiled = core.compile_model(model, "CPU", config)
            self.encoder = core.compile_model(ov.Model(embedding, model.get_parameters()), "CPU", config) if embedding else None
        self.has_embedding = self.encoder is not None
        self.unnormalize = _Unnormalize(mean, std)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        result = self.compiled({INPUT_NAME: self.unnormalize(images)})
        return result[self.compiled.output(OUTPUT_NAMES[0])], result[self.compiled.output(OUTPUT_NAMES[1])]

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return self.encoder({INPUT_NAME: self.unnormalize(images)})[0]


class GeometryEngine:
    """The engines of a run's geometries, one graph each: a batch (B, 3, H, W) runs on the graph
    of its (H, W)."""

    def __init__(self, engines: dict[tuple[int, int], object]):
        self.engines = engines
        self.name = next(iter(engines.values())).name
        self.has_embedding = all(engine.has_embedding for engine in engines.values())

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self._engine(images)(images)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return self._engine(images).embed(images)

    def _engine(self, images: torch.Tensor):
        size = tuple(images.shape[-2:])
        if size not in self.engines:
            known = ", ".join(f"{h}x{w}" for h, w in self.engines)
            raise ValueError(f"no exported graph for images of {size[0]}x{size[1]}: the export holds {known}")
        return self.engines[size]
