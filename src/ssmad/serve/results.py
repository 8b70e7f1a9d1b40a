"""What the API returns: one JSON record per image, the overlay PNG, and the model's description."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

import ssmad
from ssmad.engine.prediction_result import ImageResult
from ssmad.engine.visualize import overlay_panels


def score_images(detector, images: list[Image.Image], classes: list[str | None]) -> list[ImageResult]:
    """Score a batch of RGB images, each with its own class (None: the detector's rules), in one pass."""
    result = detector.predict_decoded(images, [None] * len(images), classes, batch_size=max(len(images), 1))
    return [result.image(i) for i in range(len(result))]


def overlay_png(image: Image.Image, heatmap: np.ndarray) -> str:
    """Base64 PNG of image | heatmap over image, at the heatmap's size (the image's own size)."""
    height, width = heatmap.shape
    rgb = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    buffer = io.BytesIO()
    Image.fromarray(overlay_panels(rgb, heatmap)).save(buffer, format="PNG", compress_level=1)  # fast; the PNG is a preview
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mask_png(mask: np.ndarray) -> str:
    """Base64 PNG of a defect mask (H, W) bool: 8-bit grayscale, 0 normal and 255 defect."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_record(
    index: int, filename: str, image: Image.Image, scored: ImageResult, overlay: bool, mask: bool = False
) -> dict:
    """The JSON record of one scored image (docs/serving.md): ``ImageResult.record()`` with its
    place, its size (``width``, ``height``: the pixels its regions' boxes count in), the overlay
    PNG unless left out, and the defect mask PNG when asked for."""
    height, width = scored.heatmap.shape
    return {
        "index": index,
        "filename": filename,
        "width": width,
        "height": height,
        **scored.record(),
        "overlay_png": overlay_png(image, scored.heatmap) if overlay else None,
        "mask_png": mask_png(scored.mask) if mask else None,
    }


def model_info(detector, max_batch: int, max_upload_mb: float) -> dict:
    """``GET /v1/model``: preset, classes, image and pixel thresholds (per class and global; the
    pixel ones as the service applies them, ``--pixel-threshold`` when given), the minimum region
    area, each class's input size ("HxW"), region of interest ("L,T,R,B", classes that have one),
    the tiles, whether an unlabelled image's class can be inferred (``class_inference``: null when
    it can, else why not) and the confidence an inferred class needs, version."""
    calibration = detector.calibration
    return {
        "preset": detector.preset,
        "classes": list(detector.class_names),
        "thresholds": {name: calibration.for_class(name).threshold for name in detector.class_names},
        "global_threshold": calibration.overall.threshold,
        "pixel_thresholds": {name: detector.pixel_threshold_for(name)[0] for name in detector.class_names},
        "global_pixel_threshold": detector.pixel_threshold_for(None)[0],
        "pixel_rule": detector.pixel_threshold_for(None)[1],
        "min_area": detector.min_area,
        "target_fpr": calibration.target_fpr,
        "input_sizes": {name: str(geometry) for name, geometry in detector.geometries.items()},
        "rois": {name: str(roi) for name, roi in detector.rois.items()},
        "tile": None if detector.tile is None else detector.tile.to_dict(),
        "class_inference": detector.class_inference_unavailable(),
        "min_class_confidence": detector.min_class_confidence,
        "ssmad_version": ssmad.__version__,
        "max_batch": max_batch,
        "max_upload_mb": max_upload_mb,
    }
