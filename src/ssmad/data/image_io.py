"""Reading image and mask files robustly: any PIL mode in, 8-bit RGB or a boolean mask out.

Conversions (never a crash, never silent clipping):
- grayscale ("L", "1"), palette ("P", "PA") and CMYK/YCbCr images are converted to RGB;
- RGBA and LA drop their alpha channel (the colour values are kept as they are);
- 16-bit images ("I;16", "I;16B", "I;16L", and "I" as PIL opens 16-bit PNGs) are scaled by
  255/65535 (not clipped at 255); 32-bit float images ("F") are taken as [0, 1] when their
  maximum is at most 1, else as [0, 255], and clipped to that range.
EXIF orientation is applied (a phone picture is seen upright), the same way for training,
test and prediction images, since every one of them is read here.

A file is read from disk once and decoded once. A corrupt or truncated file, a zero-byte file,
a file that is no image and a decompression bomb (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`)
raise `ImageReadError` naming the file and the reason. PIL's process-wide
`ImageFile.LOAD_TRUNCATED_IMAGES` is never changed (flipping it is not thread-safe); a truncated
file is recognised by the decoder asking for bytes past the end of the data, whatever that flag
says (TIFF data, decoded by libtiff, is the exception: with the flag set True by an application
a truncated TIFF is padded, as PIL does).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
MIN_SIDE = 8  # pixels; a smaller picture holds no product (a broken export, a tracking pixel)


class ImageReadError(OSError):
    """An image or mask file could not be read; the message names the file."""


_Unreadable = Callable[[Path | str, str], ImageReadError]  # (name, reason) -> the error to raise


def printable(text: str) -> str:
    """``text`` safe for any console or log: bytes of non-UTF-8 file names shown as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_image_file(path: Path) -> bool:
    """True for a file (or a symbolic link, even a broken or looping one, so that reading it names
    the problem) whose extension is a supported image type (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and (path.is_file() or path.is_symlink())


class _TruncationProbe(io.BytesIO):
    """In-memory file data that records a read past its end once `armed` (while decoding)."""

    armed = False
    ran_out = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.armed and size != 0 and not data:
            self.ran_out = True
        return data


def _unreadable(path: Path | str, reason: str) -> ImageReadError:
    return ImageReadError(
        f"cannot read image file {path}: {reason}. Replace the file or remove it from the input folder."
    )


def _open_fully(path: Path) -> Image.Image:
    """Read `path` once and decode it completely, refusing truncated data. Raises ImageReadError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ImageReadError(f"image file not found: {path}") from error
    except OSError as error:
        raise _unreadable(path, error.strerror or str(error)) from error
    return _decode_fully(data, path, _unreadable)


def _decode_fully(data: bytes, name: Path | str, unreadable: _Unreadable) -> Image.Image:
    """Decode the bytes `data` of `name` completely; errors are built by `unreadable(name, reason)`."""
    if not data:
        raise unreadable(name, "the file is empty (0 bytes)")
    probe = _TruncationProbe(data)
    try:
        image = Image.open(probe)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:
            raise unreadable(
                name, f"{image.width}x{image.height} pixels is more than the {limit} PIL decodes safely "
                "(a decompression bomb or a far too large picture)"
            )
        probe.armed = True
        image.load()
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        raise unreadable(name, f"{error} (a decompression bomb or a far too large picture)") from error
    except UnidentifiedImageError as error:
        raise unreadable(name, "no image format PIL knows (PNG, JPEG, BMP, TIFF, WebP...) recognises the data "
                         "(the file is not an image, or its start is corrupt)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise unreadable(name, f"{error} (the file is corrupt, truncated or not an image)") from error
    if probe.ran_out:
        raise unreadable(name, "image file is truncated")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright (EXIF orientation applied) 8-bit RGB of any PIL image (rules: module docstring).

    `read_image` applies it to files; `Detector.predict` to PIL images given in memory, so both
    are prepared alike.
    """
    image = ImageOps.exif_transpose(image)
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

    Raises `ImageReadError` (an OSError) naming the file when it is missing, corrupt,
    truncated, or smaller than `MIN_SIDE` pixels on a side.
    """
    path = Path(path)
    return _checked_rgb(_open_fully(path), path, _unreadable)


def _unreadable_upload(name: Path | str, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image {name}: {reason}")


def decode_image(data: bytes, name: str) -> Image.Image:
    """`read_image` for bytes in memory (an upload): the same checks and conversions.

    Raises `ImageReadError` whose message names `name` and the reason (no advice about folders).
    """
    return _checked_rgb(_decode_fully(data, name, _unreadable_upload), name, _unreadable_upload)


def _checked_rgb(image: Image.Image, name: Path | str, unreadable: _Unreadable) -> Image.Image:
    image = to_rgb(image)
    if min(image.size) < MIN_SIDE:
        raise unreadable(name, f"{image.width}x{image.height} pixels is too small (at least {MIN_SIDE} px a side)")
    return image


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask file as a boolean array (H, W): True where the value is > 0.

    Any mode is accepted (1-bit, 8-bit, palette, 16-bit, RGB: a pixel is anomalous when any
    channel is non-zero). Raises `ImageReadError` naming the file.
    """
    image = ImageOps.exif_transpose(_open_fully(Path(path)))
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA"):
        values = np.asarray(image.convert("RGB"))
        return values.max(axis=2) > 0
    if image.mode == "P":
        return np.asarray(image.convert("L")) > 0
    return np.asarray(image) > 0


_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def image_size_wh(path: Path | str) -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image` returns it (EXIF orientation applied),
    from its header alone. Raises ImageReadError naming the file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise _unreadable(path, str(error)) from error
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)
