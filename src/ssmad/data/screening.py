"""Screening a dataset's files before any work: unusable images are named and left out.

A user's folder of thousands of pictures often holds a few bad ones (a zero-byte upload, a
truncated copy, a decompression bomb, a 1x1 export, a looping symbolic link). Like a PatchCore or
anomalib user would expect, such files do not stop a run: each is decoded once up front, and the
unusable ones are reported with their reason and left out; the rest is used.
"""

from __future__ import annotations

from pathlib import Path

from ssmad.data.image_io import ImageReadError, read_image, read_mask
from ssmad.data.layouts import Sample


def image_problem(path: Path, mask_path: Path | None = None) -> str | None:
    """Why an image (and its mask, if any) cannot be used (the reading error), or None when it can."""
    try:
        read_image(path)
        if mask_path is not None:
            read_mask(mask_path)
    except (ImageReadError, OSError) as error:
        return str(error)
    return None


def screen_samples(samples: list[Sample]) -> tuple[list[Sample], list[tuple[str, str]]]:
    """(usable samples in order, [(file, reason)] of the unusable ones)."""
    usable: list[Sample] = []
    rejected: list[tuple[str, str]] = []
    for sample in samples:
        problem = image_problem(sample.path, sample.mask_path)
        if problem is None:
            usable.append(sample)
        else:
            rejected.append((str(sample.path), problem))
    return usable, rejected
