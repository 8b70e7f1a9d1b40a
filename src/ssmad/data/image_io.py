"""Reading image and mask files robustly: any PIL mode in, 8-bit RGB or a boolean mask out.

Conversions (never a crash, never silent clipping):
- grayscale ("L", "1"), palette ("P", "PA") and CMYK/YCbCr images are converted to RGB;
- RGBA and LA drop their alpha channel (the colour values are kept as they are);
- 16-bit images ("I;16", "I;16B", "I;16L", and "I" as PIL opens 16-bit PNGs) are scaled by
  255/65535 (not clipped at 255); 32-bit float images ("F") are taken as [0, 1] when their
  maximum is at most 1, else as [0, 255], and clipped to that range.
A corrupt or truncated file raises `ImageReadError` naming the file, even when a caller has
set `PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True` globally.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(OSError):
    """An image or mask file could not be read; the message names the file."""


def is_image_file(path: Path) -> bool:
    """True for a regular file whose extension is a supported image type (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _open_fully(path: Path) -> Image.Image:
    """Open and decode `path` completely, refusing truncated data. Raises ImageReadError."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as probe:
            probe.verify()
        image = Image.open(path)
        image.load()
    except FileNotFoundError as error:
        raise ImageReadError(f"image file not found: {path}") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(
            f"cannot read image file {path}: {error}. The file is corrupt, truncated or not "
            "an image; replace it or remove it from the dataset folder."
        ) from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the rules)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
        gray = np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Read an image file of any common format and PIL mode as an 8-bit RGB `PIL.Image`.

    Raises `ImageReadError` (an OSError) naming the file when it is missing, corrupt or
    truncated.
    """
    path = Path(path)
    return _to_rgb(_open_fully(path))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask file as a boolean array (H, W): True where the value is > 0.

    Any mode is accepted (1-bit, 8-bit, palette, 16-bit, RGB: a pixel is anomalous when any
    channel is non-zero). Raises `ImageReadError` naming the file.
    """
    image = _open_fully(Path(path))
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA"):
        values = np.asarray(image.convert("RGB"))
        return values.max(axis=2) > 0
    if image.mode == "P":
        return np.asarray(image.convert("L")) > 0
    return np.asarray(image) > 0
