"""Fuzzed image files for the fault suite: every kind of bad or unusual input a user's folder holds."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

NON_UTF8_NAME = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name, not valid UTF-8
NON_UTF8_BROKEN = os.fsdecode(b"broken_\xff.png")  # the same, holding no image


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png() -> bytes:
    """A 20000 x 20000 RGB PNG header with a tiny (invalid) body: a decompression bomb for PIL."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def exif_rotated_jpeg(path: Path, picture: np.ndarray) -> np.ndarray:
    """Save ``picture`` turned so that EXIF orientation 6 shows it upright; returns the upright array."""
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed after a 90 degree clockwise turn
    stored = np.rot90(picture, k=1)  # the counter-clockwise turn the camera stored
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif.tobytes(), quality=95)
    return picture


def write_fuzzed(folder: Path, source: Path) -> dict[str, bool]:
    """Write the fuzzed files into ``folder``, derived from the good image ``source``.

    Returns {file name: usable}; a looping directory link (``loop_dir``) is written too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    picture = np.asarray(Image.open(source).convert("RGB"))
    rng = np.random.default_rng(0)
    png, jpeg = folder / "whole.tmp.png", folder / "whole.tmp.jpg"
    Image.fromarray(picture).save(png)
    Image.fromarray(picture).save(jpeg, quality=90)
    files = {
        "zero_bytes.png": False,
        "random_bytes.jpg": False,
        "random_bytes.png": False,
        "truncated.png": False,
        "truncated.jpg": False,
        "one_pixel.png": False,
        "bomb.png": False,
        "symlink_loop.png": False,
        "sixteen_bit.png": True,
        "cmyk.jpg": True,
        "palette.png": True,
        "grayscale.png": True,
        "exif_rotated.jpg": True,
        NON_UTF8_NAME: True,
        NON_UTF8_BROKEN: False,
    }
    (folder / "zero_bytes.png").write_bytes(b"")
    (folder / "random_bytes.jpg").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "random_bytes.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "truncated.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    Image.fromarray(picture[:1, :1]).save(folder / "one_pixel.png")
    (folder / "bomb.png").write_bytes(bomb_png())
    os.symlink("symlink_loop.png", folder / "symlink_loop.png")
    gray16 = (picture.mean(axis=2) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "sixteen_bit.png")
    Image.fromarray(picture).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(picture).convert("P").save(folder / "palette.png")
    Image.fromarray(picture).convert("L").save(folder / "grayscale.png")
    exif_rotated_jpeg(folder / "exif_rotated.jpg", picture[: picture.shape[0] * 3 // 4])
    Image.fromarray(picture).save(folder / NON_UTF8_NAME)
    (folder / NON_UTF8_BROKEN).write_bytes(b"GIF89a not really")
    os.symlink(".", folder / "loop_dir")
    png.unlink()
    jpeg.unlink()
    return files
