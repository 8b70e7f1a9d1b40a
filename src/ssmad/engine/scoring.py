"""The one scoring path: batches in, anomaly maps and image scores out.

Training's validation and calibration, ``ssmad calibrate``, ``ssmad test``, ``Detector.predict``
and the exported graph all compute maps and scores with the model's
``anomaly_map_from_features`` (``ssmad.models.anomaly_map``), and collect them with
:func:`score_batches`. An engine is what runs the model on a batch of normalised images
(B, 3, H, W) -> maps (B, H, W), scores (B,): :class:`TorchEngine` here; the onnxruntime and
OpenVINO engines of exported models live in ``ssmad.export``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssmad.engine.class_inference import pooled_embedding
ScoreFn = Callable[[Any], tuple[Any, Any]]  # a batch -> maps (B, H, W), scores (B,): tensors or arrays
SCORING_BATCH_SIZE = 16  # images per forward pass when scoring (test, predict, calibrate), unless chosen


@dataclass
class Scored:
    """maps (N, H, W), or a list of N (H_i, W_i) maps when the images have several geometries,
    and scores (N,), float32; embeddings (N, D): the images' pooled encoder features
    (``ssmad.engine.class_inference``) where the scorer had the features, else None."""

    maps: np.ndarray | list[np.ndarray]
    scores: np.ndarray
    embeddings: np.ndarray | None = None


def join_maps(batches: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Batches of maps (b, H, W) -> one (N, H, W) array, or a list of (H, W) maps if sizes differ."""
    if len({batch.shape[1:] for batch in batches}) <= 1:
        return np.concatenate(batches)
    return [image_map for batch in batches for image_map in batch]


def score_batches(score: ScoreFn, batches: Iterable[Any], size: tuple[int, int]) -> Scored:
    """Run ``score`` on every batch and concatenate: the loop every caller shares.

    ``size`` (H, W) shapes the empty result when there are no batches.
    """
    maps, scores = [], []
    for batch in batches:
        batch_maps, batch_scores = score(batch)
        maps.append(as_float32_numpy(batch_maps))
        scores.append(as_float32_numpy(batch_scores))
    if not maps:
        return Scored(np.zeros((0, *size), np.float32), np.zeros(0, np.float32))
    return Scored(join_maps(maps), np.concatenate(scores))


def as_float32_numpy(values: Any) -> np.ndarray:
    """A tensor (any device, dtype) or array -> float32 numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


class TorchEngine:
    """An :class:`~ssmad.models.AnomalyModel` in eval mode on ``device``."""

    name = "pytorch"
    has_embedding = True

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, 3, H, W) -> maps (B, H, W), scores (B,)."""
        return self.model.anomaly_map(images.to(self.device))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> their pooled encoder features (B, D)
        (``ssmad.engine.class_inference``): the encoder only."""
        return pooled_embedding(self.model.encode(images.to(self.device)))

    @torch.no_grad()
    def from_features(self, features: list[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features [f1, f2, f3] (cached in training) -> maps (B, H, W) at ``size``, scores (B,)."""
        self.model.eval()
        features = [f.to(self.device) for f in features]
        return self.model.anomaly_map_from_features(features, self.model.decode(features), size)


def score_feature_source(model: torch.nn.Module, source: Any, device: torch.device, batch_size: int) -> Scored:
    """Eval-mode maps (at each image's input size) and scores of every item of a feature source
    (``ssmad.engine.feature_cache``), in the source's index order."""
    engine = TorchEngine(model, device)
    stride = model.encoder.feature_info[0].stride
    embeddings = []

    def score(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = features[0].shape[-2:]
        embeddings.append(as_float32_numpy(pooled_embedding(features)))
        return engine.from_features(features, (height * stride, width * stride))

    index_batches = source.index_batches(batch_size)
    scored = score_batches(score, (source.batch(indices, device) for indices in index_batches), (0, 0))
    order = np.argsort(torch.cat(index_batches).numpy(), kind="stable") if index_batches else np.zeros(0, int)
    maps = scored.maps[order] if isinstance(scored.maps, np.ndarray) else [scored.maps[i] for i in order]
    return Scored(maps, scored.scores[order], np.concatenate(embeddings)[order] if embeddings else None)
