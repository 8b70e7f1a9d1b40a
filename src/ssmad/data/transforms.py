"""Resizing and normalisation of images and masks, as the reference framework does them.

Images: PIL bilinear resize (which low-pass filters when it shrinks, like torchvision's
`Resize` on PIL images), scaled to [0, 1], normalised with the encoder's mean/std.
Masks: PIL bilinear resize of the 0/255 mask, then binarised at 0.5 (value >= 128), which is
what the reference framework (MambaAD/ADer: bilinear `Resize` + `mask > 0.5`) does, so ssmad's
pixel metrics are computed on the same masks as published numbers (docs/design.md, "Evaluation
protocol").
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ssmad.modules.encoder_base import IMAGENET_MEAN, IMAGENET_STD


def image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int (square) or an (H, W) pair; raises ValueError on non-positive sizes."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return int(height), int(width)


class ImageTransform:
    """PIL RGB image -> normalised float32 tensor (3, H, W).

    Args:
        image_size: output size, an int (square) or (H, W).
        mean, std: per-channel normalisation of the [0, 1] image (the encoder's own values).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 256,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        self.size_hw = image_hw(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) float32 tensor of the resized, normalised RGB image."""
        height, width = self.size_hw
        resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
        return (pixels.permute(2, 0, 1) - self.mean) / self.std

    def __repr__(self) -> str:
        return (
            f"ImageTransform(image_size={self.size_hw}, mean={tuple(self.mean.flatten().tolist())}, "
            f"std={tuple(self.std.flatten().tolist())})"
        )


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    """Boolean mask (h, w) -> float32 tensor (1, H, W) in {0, 1}: bilinear resize, > 0.5."""
    height, width = size_hw
    if mask.shape != (height, width):
        gray = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
        mask = np.asarray(gray.resize((width, height), Image.BILINEAR)) >= 128
    return torch.from_numpy(mask.astype(np.float32)).unsqueeze(0)


def resize_mask_nearest(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Boolean mask (h, w) -> boolean (H, W) by nearest neighbour (for masks whose size
    differs from their image's)."""
    height, width = size_hw
    gray = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(gray.resize((width, height), Image.NEAREST)) > 0
