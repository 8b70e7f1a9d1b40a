"""The class of an image that nothing else names: the nearest class prototype of pooled encoder
features, with a confidence, recorded at calibration.

A multi-class model decides with per-class thresholds, so it needs each image's class. When no
class is given and no folder names one (``ssmad.engine.detector``), the image's **embedding**
(:func:`pooled_embedding`: each encoder level averaged over the image, unit-normalised, the levels
concatenated; (B, D), D = C1 + C2 + C3, unit length) is compared with each class's **prototype**
(the unit mean of its calibration normals' embeddings). The nearest prototype names the class.

The **confidence** is geometric: each class owns the ball around its prototype of radius half the
distance to the nearest other prototype (Euclidean distance between unit vectors, a metric, so
the balls do not overlap and every point of a class's ball is nearer its prototype than any
other). An image's confidence is ``1 - d / r`` for its nearest class (``d`` its distance to the
prototype, ``r`` the ball's radius), clipped to [0, 1]: 1 on the prototype, 0 half-way to another
class or beyond. It does not ask the image to be a typical normal (a defective part is atypical
of its class, yet plainly of it), only to be nearer its class than the classes are to each other:
an image of a product the model never saw is usually as far from every prototype as they are
from each other, so gets a low confidence. Below :data:`MIN_CLASS_CONFIDENCE` the image keeps the
global threshold, and its result says so. Measured on a bottle + KolektorSDD model:
docs/decisions.md "Class inference".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MIN_CLASS_CONFIDENCE = 0.05  # below it an inferred class is not used: the global threshold is


def pooled_embedding(features: list[torch.Tensor]) -> torch.Tensor:
    """Encoder features [(B, C_i, h_i, w_i)] -> unit embeddings (B, sum C_i): each level's spatial
    mean, unit-normalised, concatenated and scaled to unit length."""
    levels = [F.normalize(f.float().mean(dim=(2, 3)), dim=1) for f in features]
    return torch.cat(levels, dim=1) / len(levels) ** 0.5


@dataclass(frozen=True)
class ClassPrototype:
    """vector (D,): the unit mean embedding of a class's calibration normals; num_normals: how
    many."""

    vector: tuple[float, ...]
    num_normals: int

    def to_dict(self) -> dict:
        return {"vector": list(self.vector), "num_normals": self.num_normals}

    @classmethod
    def from_dict(cls, data: dict) -> ClassPrototype:
        return cls(tuple(float(v) for v in data["vector"]), int(data["num_normals"]))


@dataclass(frozen=True)
class ClassGuess:
    """The nearest class of one image, its cosine similarity to that class's prototype, and the
    confidence (module docstring); ``used``: whether the confidence reaches the minimum."""

    name: str
    similarity: float
    confidence: float
    used: bool


def class_prototypes(class_names: list[str], embeddings: np.ndarray) -> dict[str, ClassPrototype]:
    """Calibration normals' classes (N,) and embeddings (N, D) -> ``{class: ClassPrototype}``."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    names = np.asarray(class_names)
    prototypes = {}
    for name in sorted(set(class_names)):
        total = embeddings[names == name].sum(axis=0)
        vector = total / max(np.linalg.norm(total), 1e-12)
        prototypes[name] = ClassPrototype(tuple(vector.astype(np.float32).tolist()), int((names == name).sum()))
    return prototypes


def infer_classes(
    prototypes: dict[str, ClassPrototype], embeddings: np.ndarray, min_confidence: float = MIN_CLASS_CONFIDENCE
) -> list[ClassGuess]:
    """Embeddings (N, D) -> each image's :class:`ClassGuess` against ``prototypes`` (at least two
    classes: a one-class model needs no inference)."""
    names = list(prototypes)
    if len(names) < 2:
        raise ValueError("class inference needs prototypes of at least two classes")
    vectors = np.array([prototypes[name].vector for name in names], dtype=np.float64)  # (K, D)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    similarity = embeddings @ vectors.T  # (N, K)
    distance = np.linalg.norm(embeddings[:, None, :] - vectors[None], axis=2)  # (N, K)
    between = np.linalg.norm(vectors[:, None, :] - vectors[None], axis=2)  # (K, K)
    np.fill_diagonal(between, np.inf)
    radius = between.min(axis=1) / 2  # (K,) each class's ball
    guesses = []
    for row, nearest in enumerate(np.argmin(distance, axis=1)):
        ratio = distance[row, nearest] / radius[nearest] if radius[nearest] > 0 else np.inf
        confidence = float(np.clip(1.0 - ratio, 0.0, 1.0))
        guesses.append(ClassGuess(names[nearest], float(similarity[row, nearest]), confidence, confidence >= min_confidence))
    return guesses
