"""Scoring new images with a trained run: ``det = ssmad.load(run); det.predict(paths)``.

Which threshold an image gets (the model itself is multi-class and never sees class labels):

1. ``class_name=`` given to :meth:`Detector.predict` (``--class`` on the command line);
2. else, for a file, the nearest folder in its path whose name is a trained class
   (``.../bottle/test/crack/001.png`` -> ``bottle``);
3. else, if the model was trained on one class, that class;
4. else the global calibration over the validation normals of all classes (``class`` None).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from ssmad.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from ssmad.engine.device import AUTO_DEVICE, resolve_device
from ssmad.engine.prediction_result import PredictionResult
from ssmad.engine.scoring import SCORING_BATCH_SIZE, ScoreFn, TorchEngine, score_batches
from ssmad.engine.thresholds import Calibration

ImageInput = Union[str, os.PathLike, Image.Image]


class Detector:
    """A trained model with its calibration, ready to score images.

    ``engine`` runs the model on normalised images (B, 3, H, W) -> maps (B, H, W), scores (B,)
    (``ssmad.engine.scoring``): PyTorch for a checkpoint, onnxruntime or OpenVINO for an
    exported model (``ssmad.export``). Everything else (preprocessing, thresholds, heatmaps) is
    the same for every engine.
    """

    def __init__(
        self,
        engine: ScoreFn,
        calibration: Calibration,
        class_names: list[str],
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        preset: str | None = None,
    ):
        from ssmad.data import ImageTransform

        self.engine = engine
        self.calibration = calibration
        self.class_names = class_names
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.preset = preset
        self.transform = ImageTransform(image_size, self.mean, self.std)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = AUTO_DEVICE) -> Detector:
        """Load a finished run (folder or ``checkpoint.pt``) onto ``device`` (PyTorch engine)."""
        payload = load_checkpoint(path)
        if payload["calibration"] is None:
            raise CheckpointError(
                f"{path} is an unfinished training run (no calibration yet): finish it with 'ssmad train --resume'"
            )
        model = model_from_checkpoint(payload)
        norm = payload["normalization"]
        return cls(
            TorchEngine(model, resolve_device(device)),
            Calibration.from_dict(payload["calibration"]),
            list(payload["class_names"]),
            int(payload["image_size"]),
            norm["mean"],
            norm["std"],
            payload["preset"],
        )

    def class_for_path(self, path: str | os.PathLike | None) -> str | None:
        """Rules 2-4 of the module docstring: a trained class named by a folder, the only class, or None."""
        if path is not None:
            for part in reversed(Path(path).resolve().parent.parts):
                if part in self.class_names:
                    return part
        return self.class_names[0] if len(self.class_names) == 1 else None

    def check_class(self, class_name: str | None) -> None:
        """Refuse a class this model was not trained on, naming the ones it knows."""
        if class_name is not None and class_name not in self.class_names:
            raise ValueError(
                f"unknown class '{class_name}': this model was trained on {', '.join(self.class_names)}; use one of them"
            )

    def predict(
        self,
        inputs: ImageInput | list[ImageInput] | torch.Tensor,
        class_name: str | None = None,
        batch_size: int = SCORING_BATCH_SIZE,
    ) -> PredictionResult:
        """Score images: a path, a PIL image, a list of them, or a normalised tensor (3,H,W)/(B,3,H,W).

        Files and PIL images are prepared alike (`ssmad.data.to_rgb`: EXIF orientation, 16-bit,
        palette, CMYK...). Tensors must already be preprocessed like training images (resized to
        ``image_size``, normalised with ``mean``/``std``). Unreadable files are skipped and listed
        in ``skipped``.
        """
        from ssmad.data import ImageReadError, read_image, to_rgb

        self.check_class(class_name)
        if isinstance(inputs, torch.Tensor):
            images = self._check_tensor(inputs)
            return self._result(images, [None] * len(images), class_name, [], batch_size)
        decoded, paths, skipped = [], [], []
        for item in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
            if isinstance(item, Image.Image):
                decoded.append(to_rgb(item))
                paths.append(None)
                continue
            try:
                decoded.append(read_image(item))
                paths.append(str(item))
            except (ImageReadError, OSError) as error:
                skipped.append((str(item), str(error)))
        return self.predict_decoded(decoded, paths, class_name, batch_size, skipped)

    def predict_decoded(
        self,
        images: list[Image.Image],
        paths: list[str | None],
        class_name: str | None | Sequence[str | None] = None,
        batch_size: int = SCORING_BATCH_SIZE,
        skipped: list[tuple[str, str]] | None = None,
    ) -> PredictionResult:
        """Score RGB images already prepared by ``read_image``/``to_rgb``; ``paths`` pick thresholds.

        ``class_name`` may also be one class (or None) per image, e.g. images of several requests
        scored in one batch.
        """
        for name in [class_name] if class_name is None or isinstance(class_name, str) else class_name:
            self.check_class(name)
        tensors = (torch.stack([self.transform(image) for image in images]) if images
                   else torch.empty(0, 3, self.image_size, self.image_size))
        return self._result(tensors, paths, class_name, list(skipped or []), batch_size)

    def _result(
        self, images: torch.Tensor, paths: list[str | None], class_name: str | None | Sequence[str | None],
        skipped: list[tuple[str, str]], batch_size: int,
    ) -> PredictionResult:
        """Score normalised images (N, 3, H, W) and attach each one's calibration."""
        given = [class_name] * len(paths) if class_name is None or isinstance(class_name, str) else list(class_name)
        classes = [name or self.class_for_path(p) for name, p in zip(given, paths)]
        maps, scores = self._score(images, batch_size)
        cals = [self.calibration.for_class(c) for c in classes]
        normalized = np.array([cal.normalize(s[None])[0] for cal, s in zip(cals, scores)], dtype=np.float64)
        heatmaps = np.stack([cal.heatmap(m) for cal, m in zip(cals, maps)]) if len(maps) else maps
        thresholds = np.array([cal.threshold for cal in cals], dtype=np.float64)
        return PredictionResult(
            scores=scores,
            normalized=normalized,
            decisions=scores > thresholds,
            maps=maps,
            heatmaps=heatmaps,
            calibration_classes=classes,
            paths=paths,
            thresholds=thresholds,
            skipped=skipped,
        )

    def _check_tensor(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images[None]
        expected = (3, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"image tensor of shape {tuple(images.shape)}: expected (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                "normalised like training images; pass file paths or PIL images to have them preprocessed"
            )
        images = images.float()
        bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"image tensor holds NaN or infinite values (images {bad[:5]} of the batch): "
                "check the preprocessing that produced it"
            )
        return images

    def _score(self, images: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, 3, H, W) -> maps (N, H, W) and scores (N,) as float32 NumPy arrays."""
        batches = images.split(batch_size) if len(images) else []
        scored = score_batches(self.engine, batches, (self.image_size, self.image_size))
        return scored.maps, scored.scores

