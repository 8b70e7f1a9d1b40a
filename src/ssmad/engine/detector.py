"""Scoring new images with a trained run: ``det = ssmad.load(run); det.predict(paths)``.

Which threshold an image gets (the model itself is multi-class and never sees class labels):

1. ``class_name=`` given to :meth:`Detector.predict` (``--class`` on the command line);
2. else, for a file, the nearest folder in its path whose name is a trained class
   (``.../bottle/test/crack/001.png`` -> ``bottle``);
3. else, if the model was trained on one class, that class;
4. else the class inferred from the image (``ssmad.engine.class_inference``: the nearest class
   prototype of its pooled encoder features) when its confidence reaches
   ``min_class_confidence`` (default ``MIN_CLASS_CONFIDENCE``, an attribute to set);
5. else the global calibration over the validation normals of all classes (``class`` None), with
   a note saying why (a low confidence, or a run or export without class prototypes).

Each result says which rule chose its class (``class_source``: "given", "folder", "only class",
"inferred" or "global") and, where a class was inferred, the inferred class and its confidence.

An image is anomalous when its score is at or above its class's threshold. Its defect mask and
regions (``ssmad.engine.pixel_decision``) come from its class's calibrated pixel threshold, or the
one given to :meth:`Detector.set_pixel_decision` (``--pixel-threshold``, one value for every
class), and keep the components of at least ``min_area`` pixels of the original image
(``--min-area``, default ``ssmad.metrics.defect_regions.DEFAULT_MIN_AREA``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ssmad.data.geometry import Geometry, aspect_mismatch, nearest_geometry
from ssmad.data.roi import Roi
from ssmad.engine.class_inference import MIN_CLASS_CONFIDENCE, ClassGuess, infer_classes
from ssmad.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    stored_geometries,
    stored_rois,
)
from ssmad.engine.device import AUTO_DEVICE, resolve_device
from ssmad.engine.pixel_decision import pixel_decision
from ssmad.engine.prediction_result import PredictionResult
from ssmad.engine.scoring import SCORING_BATCH_SIZE, ScoreFn, TorchEngine, as_float32_numpy, score_batches
from ssmad.engine.thresholds import Calibration
from ssmad.engine.tiling import TileGrid, TileSettings, score_tiled
from ssmad.metrics.defect_regions import DEFAULT_MIN_AREA
from ssmad.models.image_score import DEFAULT_IMAGE_SCORE

ImageInput = Union[str, os.PathLike, Image.Image]


@dataclass
class ClassChoice:
    """The calibration class of one image (None: global), the rule that chose it, the inferred
    class where one was inferred, and the notes its result carries."""

    name: str | None
    source: str
    guess: ClassGuess | None = None
    notes: list[str] = field(default_factory=list)


class Detector:
    """A trained model with its calibration, ready to score images.

    ``engine`` runs the model on normalised images (B, 3, H, W) -> maps (B, H, W), scores (B,)
    (``ssmad.engine.scoring``): PyTorch for a checkpoint, onnxruntime or OpenVINO for an
    exported model (``ssmad.export``). Everything else (geometry, tiles, thresholds, maps at the
    original resolution, heatmaps) is the same for every engine.

    Geometry (``ssmad.data.geometry``): an image is brought to its class's stored geometry; an
    image of no known class to the stored geometry nearest its aspect ratio, which its result
    says. An image stretched by more than 10 % on the way carries a warning. With ``tile`` the
    image, at its geometry, is scored in overlapping tiles (``ssmad.engine.tiling``). The map is
    blurred at the model's resolution, its image score is taken there (rule ``image_score``,
    ``ssmad.models.image_score``: the engine's for whole images, the same on the stitched map of
    tiles), and it is then resized to the
    image's own size, so scores and thresholds do not depend on the image's resolution.

    Regions of interest (``rois``, ``ssmad.data.roi``): an image of a class with one is cropped to
    it before it is brought to the class's geometry (an image that does not hold the box is an
    error naming it); its map is resized to the box and placed into the full image, 0 outside.
    An image of no known class (nearest geometry) gets no ROI.
    """

    def __init__(
        self,
        engine: ScoreFn,
        calibration: Calibration,
        class_names: list[str],
        geometries: Mapping[str, Geometry],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        preset: str | None = None,
        tile: TileSettings | None = None,
        rois: Mapping[str, Roi] | None = None,
        image_score: str = DEFAULT_IMAGE_SCORE,
    ):
        from ssmad.data import ImageTransform

        self.engine = engine
        self.calibration = calibration
        self.class_names = class_names
        self.geometries = dict(geometries)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.preset = preset
        self.tile = tile
        self.rois = dict(rois or {})
        self.image_score = image_score
        self.min_class_confidence = MIN_CLASS_CONFIDENCE
        self.transforms = {g: ImageTransform(g.hw, self.mean, self.std) for g in set(self.geometries.values())}
        self.set_pixel_decision()

    def set_pixel_decision(self, pixel_threshold: float | None = None, min_area: int = DEFAULT_MIN_AREA) -> None:
        """How masks are made from now on: ``pixel_threshold`` for every class instead of the
        calibrated ones (None: the calibrated ones), regions of at least ``min_area`` pixels."""
        if min_area < 1:
            raise ValueError(f"--min-area is a number of pixels of the original image >= 1, got {min_area}")
        if pixel_threshold is not None and not np.isfinite(pixel_threshold):
            raise ValueError(f"--pixel-threshold must be a finite number, got {pixel_threshold}")
        self.pixel_threshold = None if pixel_threshold is None else float(pixel_threshold)
        self.min_area = int(min_area)

    def pixel_threshold_for(self, class_name: str | None) -> tuple[float, str]:
        """(the pixel threshold masks of ``class_name`` (None: global) are made with, its rule:
        "given" for one set by :meth:`set_pixel_decision`)."""
        if self.pixel_threshold is not None:
            return self.pixel_threshold, "given"
        pixel = self.calibration.for_class(class_name).pixel_threshold
        return pixel.value, pixel.rule

    def mask_threshold(self, class_name: str | None, score: float) -> float:
        """The threshold an image of ``class_name`` with image ``score`` is masked at: its pixel
        threshold, except under the ``image`` rule for an image decided normal, which gets no mask
        (infinity). The image score is a mean of the map's top pixels
        (``ssmad.models.image_score``), so a normal image can hold single pixels above the image
        threshold, while an anomalous one (top mean >= threshold) always holds one: the rule's
        promise, a region exactly when the image is anomalous, needs only this gate."""
        value, rule = self.pixel_threshold_for(class_name)
        if rule == "image" and not self.calibration.for_class(class_name).is_anomalous(score):
            return float("inf")
        return value

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
            stored_geometries(payload),
            norm["mean"],
            norm["std"],
            payload["preset"],
            TileSettings.from_dict(payload.get("tile")),
            stored_rois(payload),
            model.config.image_score,
        )

    def geometry_for(self, class_name: str | None, size_wh: tuple[int, int]) -> tuple[Geometry, list[str]]:
        """The geometry an image of ``size_wh`` (width, height) and class ``class_name`` is scored at,
        and the notes its result carries (a borrowed geometry, a stretched aspect ratio). A class with a
        region of interest is scored on its box: the box's aspect ratio counts."""
        width, height = self.rois[class_name].size_hw[::-1] if class_name in self.rois else size_wh
        aspect = width / height
        notes = []
        if class_name in self.geometries:
            geometry = self.geometries[class_name]
        else:
            nearest, geometry = nearest_geometry(aspect, self.geometries)
            if len(set(self.geometries.values())) > 1:
                notes.append(f"no class known: scored at {geometry}, the geometry of '{nearest}', nearest its aspect ratio")
        if aspect_mismatch(aspect, geometry):
            notes.append(
                f"resized from {width}x{height} (W x H) to {geometry.width}x{geometry.height}: its aspect ratio "
                f"{aspect:.2f} differs from the model's {geometry.aspect:.2f} for it"
            )
        return geometry, notes

    def class_for_path(self, path: str | os.PathLike | None) -> tuple[str | None, str]:
        """Rules 2-3 of the module docstring: (a trained class named by a folder, "folder"), (the only
        class, "only class"), or (None, "global")."""
        if path is not None:
            for part in reversed(Path(path).resolve().parent.parts):
                if part in self.class_names:
                    return part, "folder"
        return (self.class_names[0], "only class") if len(self.class_names) == 1 else (None, "global")

    def class_inference_unavailable(self) -> str | None:
        """Why this detector cannot infer an image's class (rule 4), or None when it can."""
        if len(self.class_names) < 2:
            return "the model has one class, which every image gets"
        if len(self.calibration.prototypes) < 2:
            return ("the run's calibration holds no class prototypes (calibrated before class inference): "
                    "run 'ssmad calibrate RUN' and export again")
        if not getattr(self.engine, "has_embedding", False):
            return "this exported graph has no embedding output (exported before class inference): export the run again"
        return None

    def infer_classes(self, images: list[Image.Image] | torch.Tensor, batch_size: int = SCORING_BATCH_SIZE) -> list[ClassGuess]:
        """The nearest class of each image and its confidence (``ssmad.engine.class_inference``):
        RGB images embedded whole at the stored geometry nearest their aspect ratio, or normalised
        tensors (N, 3, H, W) at a stored geometry. ValueError when :meth:`class_inference_unavailable`."""
        reason = self.class_inference_unavailable()
        if reason is not None:
            raise ValueError(f"cannot infer classes: {reason}")
        if len(images) == 0:
            return []
        if isinstance(images, torch.Tensor):  # one geometry
            groups = [(list(range(len(images))), images)]
        else:
            geometries = [nearest_geometry(image.width / image.height, self.geometries)[1] for image in images]
            groups = [(indices, torch.stack([self.transforms[geometry](images[i]) for i in indices]))
                      for geometry, indices in _positions_by(geometries).items()]
        embeddings = [None] * len(images)
        for indices, tensors in groups:
            embedded = np.concatenate([as_float32_numpy(self.engine.embed(part)) for part in tensors.split(batch_size)])
            for i, embedding in zip(indices, embedded):
                embeddings[i] = embedding
        return infer_classes(self.calibration.prototypes, np.stack(embeddings), self.min_class_confidence)

    def check_class(self, class_name: str | None) -> None:
        """Refuse a class this model was not trained on, naming the ones it knows."""
        if class_name is not None and class_name not in self.class_names:
            raise ValueError(
                f"unknown class '{class_name}': this model was trained on {', '.join(self.class_names)}; use one of them"
            )

    def check_regions(self, images: list[Image.Image], sources: list[str], class_name: str | None = None) -> None:
        """Refuse, naming its source, an image that does not hold its class's region of interest
        (the class given, else the only class): what a service checks before it queues a request."""
        for image, source, (name, _) in zip(images, sources, self._classes(class_name, [None] * len(images))):
            if name in self.rois:
                self.rois[name].check_fits(image.size, source)

    def predict(
        self,
        inputs: ImageInput | list[ImageInput] | torch.Tensor,
        class_name: str | None = None,
        batch_size: int = SCORING_BATCH_SIZE,
    ) -> PredictionResult:
        """Score images: a path, a PIL image, a list of them, or a normalised tensor (3,H,W)/(B,3,H,W).

        Files and PIL images are prepared alike (`ssmad.data.to_rgb`: EXIF orientation, 16-bit,
        palette, CMYK...). Tensors must already be preprocessed like training images (cropped to the
        class's region of interest if it has one, resized to a stored geometry, normalised with
        ``mean``/``std``); their maps stay at that size. Unreadable
        files are skipped and listed in ``skipped``.
        """
        from ssmad.data import ImageReadError, read_image, to_rgb

        self.check_class(class_name)
        if isinstance(inputs, torch.Tensor):
            images = self._check_tensor(inputs)
            maps, scores = self.score_images(images, batch_size)
            paths = [None] * len(images)
            geometry = str(Geometry(*images.shape[-2:]))
            chosen = self._inferred(self._classes(class_name, paths), images, batch_size)
            return self._result(maps, maps, scores, chosen, paths, [], [geometry] * len(images), [[] for _ in paths])
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
        scored in one batch. Maps and heatmaps come at each image's own size.
        """
        chosen = self._inferred(self._classes(class_name, paths), images, batch_size)
        classes = [choice.name for choice in chosen]
        rois = [self.rois.get(name) for name in classes]
        seen = [
            image if roi is None else roi.crop(image, path or f"image {i} of the batch")
            for i, (image, roi, path) in enumerate(zip(images, rois, paths))
        ]
        placed = [self.geometry_for(name, image.size) for name, image in zip(classes, images)]
        model_maps = [None] * len(images)
        scores = np.zeros(len(images), np.float32)
        for geometry, indices in _positions_by([geometry for geometry, _ in placed]).items():
            tensors = torch.stack([self.transforms[geometry](seen[i]) for i in indices])
            maps, group_scores = self.score_images(tensors, batch_size)
            for i, image_map, score in zip(indices, maps, group_scores):
                model_maps[i], scores[i] = image_map, score
        maps = [map_at_image_size(m, (image.height, image.width), roi) for m, image, roi in zip(model_maps, images, rois)]
        return self._result(model_maps, maps, scores, chosen, paths, list(skipped or []), [str(g) for g, _ in placed],
                            [notes for _, notes in placed], rois)

    def _classes(self, class_name: str | None | Sequence[str | None], paths: list[str | None]) -> list[tuple[str | None, str]]:
        """(calibration class, rule) of each image: the one given, else rules 2-3 of the module docstring."""
        given = [class_name] * len(paths) if class_name is None or isinstance(class_name, str) else list(class_name)
        for name in set(given):
            self.check_class(name)
        return [(name, "given") if name else self.class_for_path(p) for name, p in zip(given, paths)]

    def _inferred(
        self, classes: list[tuple[str | None, str]], images: list[Image.Image] | torch.Tensor, batch_size: int
    ) -> list[ClassChoice]:
        """Rules 4-5 of the module docstring for the images ``classes`` left without one."""
        unknown = [i for i, (name, _) in enumerate(classes) if name is None]
        chosen = [ClassChoice(name, source) for name, source in classes]
        if not unknown:
            return chosen
        reason = self.class_inference_unavailable()
        if reason is not None:
            note = f"no class given or named by a folder, and none inferred ({reason}): judged against the global threshold"
            for i in unknown:
                chosen[i] = ClassChoice(None, "global", None, [note])
            return chosen
        picked = images[unknown] if isinstance(images, torch.Tensor) else [images[i] for i in unknown]
        for i, guess in zip(unknown, self.infer_classes(picked, batch_size)):
            if guess.used:
                chosen[i] = ClassChoice(guess.name, "inferred", guess)
            else:
                chosen[i] = ClassChoice(None, "global", guess, [
                    f"class inferred as '{guess.name}' with confidence {guess.confidence:.2f}, below "
                    f"{self.min_class_confidence}: judged against the global threshold"
                ])
        return chosen

    def _result(
        self, model_maps: list[np.ndarray], maps: list[np.ndarray], scores: np.ndarray, chosen: list[ClassChoice],
        paths: list[str | None], skipped: list[tuple[str, str]], geometries: list[str], notes: list[list[str]],
        rois: list[Roi | None] | None = None,
    ) -> PredictionResult:
        """Attach each image's calibration to its map (H_i, W_i) and score, and make its mask and
        regions from its map at the model's resolution (h_i, w_i), placed into its region of
        interest where ``rois`` gives one."""
        classes = [choice.name for choice in chosen]
        cals = [self.calibration.for_class(c) for c in classes]
        normalized = np.array([cal.normalize(s[None])[0] for cal, s in zip(cals, scores)], dtype=np.float64)
        thresholds = np.array([cal.threshold for cal in cals], dtype=np.float64)
        pixel_thresholds = np.array([self.pixel_threshold_for(c)[0] for c in classes], dtype=np.float64)
        mask_thresholds = [self.mask_threshold(c, s) for c, s in zip(classes, scores)]
        decided = [
            pixel_decision(m, image_map, t, self.min_area, roi)
            for m, image_map, t, roi in zip(model_maps, maps, mask_thresholds, rois or [None] * len(maps))
        ]
        return PredictionResult(
            scores=scores,
            normalized=normalized,
            decisions=np.array([cal.is_anomalous(s) for cal, s in zip(cals, scores)], dtype=bool),
            maps=maps,
            heatmaps=[cal.heatmap(m) for cal, m in zip(cals, maps)],
            calibration_classes=classes,
            paths=paths,
            thresholds=thresholds,
            skipped=skipped,
            geometries=geometries,
            warnings=[choice.notes + image_notes for choice, image_notes in zip(chosen, notes)],
            class_sources=[choice.source for choice in chosen],
            class_guesses=[choice.guess for choice in chosen],
            pixel_thresholds=pixel_thresholds,
            masks=[mask for mask, _ in decided],
            regions=[regions for _, regions in decided],
        )

    def _check_tensor(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images[None]
        known = sorted({g.hw for g in self.geometries.values()})
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) not in known:
            sizes = ", ".join(f"(B, 3, {h}, {w})" for h, w in known)
            raise ValueError(
                f"image tensor of shape {tuple(images.shape)}: expected one of {sizes}, "
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

    def score_images(self, images: torch.Tensor, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Images (N, 3, H, W) of one geometry -> maps (H, W) at that geometry and scores (N,),
        whole or in tiles."""
        height, width = images.shape[-2:]
        if self.tile is not None and max(height, width) > self.tile.size:
            grid = TileGrid(height, width, self.tile.size, self.tile.overlap)
            tiled = [score_tiled(self.engine, image, grid, batch_size, self.image_score) for image in images]
            return [m for m, _ in tiled], np.array([s for _, s in tiled], np.float32)
        scored = score_batches(self.engine, images.split(batch_size), (height, width))
        return list(scored.maps), scored.scores


def _positions_by(keys: Sequence) -> dict:
    """{key: the positions in ``keys`` that hold it}, keys in first-seen order: images grouped by
    the geometry they run at."""
    positions: dict = {}
    for i, key in enumerate(keys):
        positions.setdefault(key, []).append(i)
    return positions


def map_at_image_size(image_map: np.ndarray, size_hw: tuple[int, int], roi: Roi | None = None) -> np.ndarray:
    """A map (h, w) at the model's resolution -> (H, W) of its image: resized to the whole image, or
    with ``roi`` resized to the box and placed into the image, 0 outside (``Roi.place``)."""
    if roi is None:
        return resize_map(image_map, size_hw)
    return roi.place(resize_map(image_map, roi.size_hw), size_hw)


def resize_map(image_map: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A map (h, w) at the model's resolution -> (H, W), bilinear (half-pixel centres)."""
    if image_map.shape == size_hw:
        return image_map
    resized = F.interpolate(torch.from_numpy(image_map)[None, None], size=size_hw, mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()
