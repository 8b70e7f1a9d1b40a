"""Overlay pictures: image | ground truth | heatmap, side by side, as PNG (Pillow only).

Heatmap values come in already scaled to [0, 1] on the class's fixed scale
(:meth:`ssmad.engine.thresholds.ClassCalibration.heatmap`), never per-image min-max.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Control points of a "jet"-like colour map: value -> RGB in [0, 1].
_JET_POSITIONS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_JET_COLOURS = np.array(
    [[0.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]
)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values (H, W) in [0, 1] -> RGB (H, W, 3) float in [0, 1] ("jet" colour map)."""
    flat = np.clip(values, 0.0, 1.0).ravel()
    rgb = np.stack([np.interp(flat, _JET_POSITIONS, _JET_COLOURS[:, c]) for c in range(3)], axis=1)
    return rgb.reshape(*values.shape, 3)


def denormalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalised image (3, H, W) -> RGB (H, W, 3) float in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    return (image.cpu() * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy()


def overlay_panels(
    rgb: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.5
) -> np.ndarray:
    """Side-by-side picture (H, P*W, 3) uint8: image | ground truth (if given) | heatmap over image.

    rgb (H, W, 3) in [0, 1]; heat (H, W) in [0, 1]; mask (H, W) in {0, 1}.
    """
    panels = [rgb]
    if mask is not None:
        red = np.zeros_like(rgb)
        red[..., 0] = 1.0
        weight = 0.6 * mask[..., None]
        panels.append(rgb * (1 - weight) + red * weight)
    panels.append(rgb * (1 - alpha) + colorize(heat) * alpha)
    return (np.concatenate(panels, axis=1) * 255).round().astype(np.uint8)


def save_overlay(
    path: str | Path, rgb: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None
) -> Path:
    """Write :func:`overlay_panels` as a PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_panels(rgb, heat, mask)).save(path)
    return path
