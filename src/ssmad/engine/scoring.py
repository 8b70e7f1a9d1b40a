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

ScoreFn = Callable[[Any], tuple[Any, Any]]  # a batch -> maps (B, H, W), scores (B,): tensors or arrays
SCORING_BATCH_SIZE = 16  # images per forward pass when scoring (test, predict, calibrate), unless chosen


@dataclass
class Scored:
    """maps (N, H, W) and scores (N,), float32."""

    maps: np.ndarray
    scores: np.ndarray


def score_batches(score: ScoreFn, batches: Iterable[Any], size: tuple[int, int]) -> Scored:
    """Run ``score`` on every batch and concatenate: the loop every caller shares.

    ``size`` (H, W) shapes the empty result when there are no batches.
    """
    maps, scores = [], []
    for batch in batches:
        batch_maps, batch_scores = score(batch)
        maps.append(_numpy(batch_maps))
        scores.append(_numpy(batch_scores))
    if not maps:
        return Scored(np.zeros((0, *size), np.float32), np.zeros(0, np.float32))
    return Scored(np.concatenate(maps), np.concatenate(scores))


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


class TorchEngine:
    """An :class:`~ssmad.models.AnomalyModel` in eval mode on ``device``."""

    name = "pytorch"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, 3, H, W) -> maps (B, H, W), scores (B,)."""
        return self.model.anomaly_map(images.to(self.device))

    @torch.no_grad()
    def from_features(self, features: list[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features [f1, f2, f3] (cached in training) -> maps (B, H, W) at ``size``, scores (B,)."""
        self.model.eval()
        features = [f.to(self.device) for f in features]
        return self.model.anomaly_map_from_features(features, self.model.decode(features), size)


def score_feature_source(
    model: torch.nn.Module, source: Any, device: torch.device, batch_size: int, size: tuple[int, int]
) -> Scored:
    """Eval-mode maps and scores of every item of a feature source (``ssmad.engine.feature_cache``)."""
    engine = TorchEngine(model, device)
    batches = (source.batch(indices, device) for indices in torch.arange(len(source)).split(batch_size))
    return score_batches(lambda features: engine.from_features(features, size), batches, size)
