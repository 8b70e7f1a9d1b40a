"""``ssmad predict``: score files, folders and globs; write JSON Lines, CSV and overlays.

Outputs in the chosen folder:
- ``predictions.jsonl`` and ``predictions.csv``: one row per scored image with ``path``,
  ``class`` (the calibration used; empty/null = global), ``class_source`` (the rule that chose
  it: given, folder, only class, inferred or global), ``inferred_class`` and ``class_confidence``
  (where the class was inferred from the image, ``ssmad.engine.class_inference``), ``score`` (raw), ``normalized``
  (0.5 at the threshold), ``threshold`` and ``decision`` (``anomalous`` or ``normal``),
  ``pixel_threshold`` (the threshold the mask was made with), ``overlay`` and ``mask`` (the
  pictures' file names, when written). The JSON Lines rows carry the defect ``regions`` (box
  ``[left, top, right, bottom]`` right/bottom exclusive, ``area_px``, ``area_fraction``,
  ``peak_score``, ``mean_score``, ``centroid`` ``[x, y]``, in pixels of the original image,
  highest peak first); the CSV rows their count (``regions``) and the largest one's area
  (``largest_region_px``, ``largest_region_fraction``; empty without a region);
- ``skipped.csv``: inputs that were missing or unreadable, and overlays that could not be
  written, with the reason (also printed);
- ``overlays/*.png``: image | heatmap on the class's fixed scale;
- ``masks/*.png``: the binary defect mask at the image's own size, 0 normal and 255 defect (the
  same names as the overlays);
- with ``submission_root`` (``--submission-root``, MVTec AD 2's test_private and
  test_private_mixed): ``anomaly_images/**/*.tiff`` (float16 maps) and
  ``anomaly_images_thresholded/**/*.png`` (the masks) mirroring each image's path below that
  dataset root, the form its benchmark server takes (``ssmad.engine.mvtec2_submission``, with its
  assumptions).

Rows are written (and flushed) batch by batch as they are scored, so an interrupt (Ctrl-C) or
a failure keeps every row scored before it; the interrupt says how many rows were written. A
failing overlay costs only that picture: its row is kept with an empty ``overlay``. Each file
is read and decoded once, for scoring and its overlay alike.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ssmad.engine.atomic_write import atomic_write_text
from ssmad.engine.detector import Detector
from ssmad.engine.mvtec2_submission import write_submission_image
from ssmad.engine.scoring import SCORING_BATCH_SIZE
from ssmad.engine.visualize import save_overlay

CSV_FIELDS = (
    "path", "class", "class_source", "inferred_class", "class_confidence", "score", "normalized", "threshold", "decision", "geometry", "warnings", "pixel_threshold",
    "regions", "largest_region_px", "largest_region_fraction", "overlay", "mask",
)


@dataclass(frozen=True)
class PredictOutputs:
    """Which files ``predict_files`` writes besides the rows: overlays, masks, and MVTec AD 2's
    submission form for images below ``submission_root`` (None: not written)."""

    overlays: bool = True
    masks: bool = True
    submission_root: Path | None = None


@dataclass
class PredictSummary:
    """What ``predict_files`` did: rows written and (input, reason) pairs skipped."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and globs -> (files, missing inputs)."""
    from ssmad.data.image_io import is_image_file

    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for text in inputs:
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        if not any(m.exists() for m in matches):
            missing.append((text, "no such file or folder" if not glob.has_magic(text) else "the pattern matches nothing"))
            continue
        for path in matches:
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if is_image_file(p)))
            elif path.is_file():
                files.append(path)
    return files, missing


def predict_files(
    detector: Detector,
    inputs: list[str],
    out_dir: str | Path,
    class_name: str | None = None,
    outputs: PredictOutputs = PredictOutputs(),
    batch_size: int = SCORING_BATCH_SIZE,
) -> PredictSummary:
    """Score every image the inputs name; write the outputs described in the module docstring.

    Raises KeyboardInterrupt (saying how many rows were written) when interrupted.
    """
    detector.check_class(class_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, missing = expand_inputs(inputs)
    summary = PredictSummary(skipped=list(missing))
    jsonl_path, csv_path = out_dir / "predictions.jsonl", out_dir / "predictions.csv"
    with open(jsonl_path, "w", encoding="utf-8") as jsonl, \
            open(csv_path, "w", newline="", encoding="utf-8", errors="surrogateescape") as table:
        writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
        writer.writeheader()
        try:
            for start in range(0, len(files), batch_size):
                rows = _score_batch(detector, files[start : start + batch_size], start, out_dir, class_name,
                                    outputs, summary)
                for row in rows:
                    jsonl.write(json.dumps(row) + "\n")
                    writer.writerow(csv_row(row))
                jsonl.flush()
                table.flush()
                summary.rows.extend(rows)
        except KeyboardInterrupt as interrupt:
            _write_skipped(out_dir, summary.skipped)
            raise KeyboardInterrupt(
                f"{len(summary.rows)} row(s) written to {jsonl_path} and {csv_path.name} before the interrupt"
            ) from interrupt
    _write_skipped(out_dir, summary.skipped)
    return summary


def csv_row(row: dict) -> dict:
    """A JSON Lines row -> its CSV row: the regions' count and the largest region's area."""
    largest = max(row["regions"], key=lambda region: region["area_px"], default=None)
    return {
        **row, "class": row["class"] or "", "warnings": "; ".join(row["warnings"]), "regions": len(row["regions"]),
        "largest_region_px": "" if largest is None else largest["area_px"],
        "largest_region_fraction": "" if largest is None else largest["area_fraction"],
    }


def _score_batch(
    detector: Detector, files: list[Path], start: int, out_dir: Path, class_name: str | None,
    outputs: PredictOutputs, summary: PredictSummary,
) -> list[dict]:
    """Rows of one batch of files (numbered from ``start``); unreadable files go to ``summary.skipped``."""
    from ssmad.data import ImageReadError, read_image

    images, paths = [], []
    for path in files:
        try:
            images.append(read_image(path))
            paths.append(str(path))
        except (ImageReadError, OSError) as error:
            summary.skipped.append((str(path), str(error)))
    result = detector.predict_decoded(images, paths, class_name=class_name, batch_size=len(files))
    rows = []
    for i, image in enumerate(images):
        name = f"{start + i:05d}_{Path(paths[i]).stem}.png"
        written = {"overlay": "", "mask": ""}
        if outputs.submission_root is not None:
            write_submission_image(out_dir, outputs.submission_root, Path(paths[i]).resolve(), result.maps[i], result.masks[i])
        for kind, wanted, folder in (("overlay", outputs.overlays, "overlays"), ("mask", outputs.masks, "masks")):
            if not wanted:
                continue
            try:
                if kind == "overlay":
                    save_overlay(out_dir / folder / name, display_image(image, result.heatmaps[i].shape), result.heatmaps[i])
                else:
                    save_mask(out_dir / folder / name, result.masks[i])
                written[kind] = name
            except OSError as error:
                summary.skipped.append((paths[i], f"{kind} not written: {error}"))
        rows.append({"path": paths[i], **result.image(i).record(), **written})
    return rows


def save_mask(path: Path, mask: np.ndarray) -> None:
    """A defect mask (H, W) bool as an 8-bit PNG, 0 normal and 255 defect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def _write_skipped(out_dir: Path, skipped: list[tuple[str, str]]) -> None:
    """``skipped.csv`` with every (input, reason); removed when nothing was skipped."""
    skipped_file = out_dir / "skipped.csv"
    if not skipped:
        skipped_file.unlink(missing_ok=True)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    atomic_write_text(skipped_file, buffer.getvalue())


def display_image(image: Image.Image, size_hw: tuple[int, int]) -> np.ndarray:
    """PIL image -> RGB (H, W, 3) float in [0, 1] at ``size_hw`` (its map's size)."""
    if (image.height, image.width) != tuple(size_hw):
        image = image.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
