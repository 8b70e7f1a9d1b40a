"""Signals while training: the held-out normals every epoch, and optionally a labelled validation set.

Without any anomaly, the held-out normals (the calibration images) say whether the model still
learns: the mean and 99th percentile of their image scores (eval-mode maps, as prediction
computes them) and their reconstruction loss. The scores of the last pass are the calibration's
input, so a run that ends after a validation pass does not score its normals twice.

``--val-data DIR`` adds a labelled validation set (normal and anomalous images with masks: the
test split of a dataset root of the training data's layout, which must not be the training
root, whose test split is for testing): its I-AUROC and P-AP per epoch. Its encoder features are
computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssmad.engine.class_inference import pooled_embedding
from ssmad.engine.feature_cache import FeatureSource, build_feature_source
from ssmad.engine.scoring import Scored, join_maps, score_feature_source
from ssmad.metrics.ranking import ranking_metrics
from ssmad.metrics.regions import split_pixels

SCORE_PERCENTILE = 99


@dataclass
class NormalsValidation:
    """One pass over the held-out normals: ``scored`` (maps and scores, in the source's index
    order) and the mean reconstruction loss per image."""

    scored: Scored
    loss: float

    def signals(self) -> dict[str, float]:
        """``val_score_mean``, ``val_score_p99`` and ``val_loss``."""
        scores = self.scored.scores
        return {
            "val_score_mean": float(np.mean(scores)) if scores.size else float("nan"),
            f"val_score_p{SCORE_PERCENTILE}": float(np.percentile(scores, SCORE_PERCENTILE)) if scores.size else float("nan"),
            "val_loss": self.loss,
        }


@torch.no_grad()
def validate_normals(model: torch.nn.Module, source: FeatureSource, device: torch.device, batch_size: int) -> NormalsValidation:
    """Eval-mode maps (B, H, W), scores (B,) and reconstruction loss of every item of ``source``;
    the model is left in eval mode."""
    model.eval()
    stride = model.encoder.feature_info[0].stride
    maps, scores, embeddings, order = [], [], [], []
    loss_sum = 0.0
    for indices in source.index_batches(batch_size):
        features = source.batch(indices, device)
        decoded = model.decode(features)
        loss_sum += float(model.loss(features, decoded)) * len(indices)
        height, width = features[0].shape[-2:]
        batch_maps, batch_scores = model.anomaly_map_from_features(features, decoded, (height * stride, width * stride))
        maps.append(batch_maps.float().cpu().numpy())
        scores.append(batch_scores.float().cpu().numpy())
        embeddings.append(pooled_embedding(features).cpu().numpy())
        order.append(indices)
    if not scores:
        return NormalsValidation(Scored(np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32)), float("nan"))
    position = np.argsort(torch.cat(order).numpy(), kind="stable")
    joined = join_maps(maps)
    ordered = joined[position] if isinstance(joined, np.ndarray) else [joined[i] for i in position]
    scored = Scored(ordered, np.concatenate(scores)[position], np.concatenate(embeddings)[position])
    return NormalsValidation(scored, loss_sum / len(source))


def check_val_data(val_data: str, training_roots: list[str]) -> None:
    """Refuse ``--val-data`` that is a training root: its test split is the test set."""
    if any(Path(val_data).resolve() == Path(root).resolve() for root in training_roots):
        raise ValueError(
            f"--val-data {val_data} is the training data, whose test split is the test set: "
            "give a separate validation copy (normal and anomalous images no test uses)"
        )


class LabelledValidation:
    """A labelled validation set: features cached once, labels (N,) and masks at the model's
    geometry, scored every epoch for I-AUROC and P-AP."""

    def __init__(self, model: torch.nn.Module, dataset, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.batch_size = batch_size
        self.source = build_feature_source(model, dataset, device, "memory", batch_size=batch_size)
        items = [dataset[i] for i in range(len(dataset))]
        self.labels = np.asarray([item["label"] for item in items])
        self.masks = [item["mask"][0].numpy() > 0.5 for item in items]
        if not (self.labels == 1).any() or not (self.labels == 0).any():
            raise ValueError("--val-data needs normal and anomalous test images (I-AUROC needs both)")

    def __len__(self) -> int:
        return len(self.labels)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """``val_image_auroc`` and ``val_pixel_ap`` of ``model`` (left in eval mode)."""
        scored = score_feature_source(model, self.source, self.device, self.batch_size)
        anomalous = self.labels == 1
        image = ranking_metrics(scored.scores[anomalous], scored.scores[~anomalous])
        pixels = split_pixels(self.masks, list(scored.maps))
        pixel = ranking_metrics(pixels.positive_scores, pixels.negative_sorted, negatives_sorted=True)
        return {"val_image_auroc": image["auroc"], "val_pixel_ap": pixel["ap"]}
