"""``ssmad predict``: score files, folders and globs; write JSON Lines, CSV and overlays.

Outputs in the chosen folder:
- ``predictions.jsonl`` and ``predictions.csv``: one row per scored image with ``path``,
  ``class`` (the calibration used; empty/null = global), ``score`` (raw), ``normalized``
  (0.5 at the threshold), ``threshold`` and ``decision`` (``anomalous`` or ``normal``), and
  ``overlay`` (the picture's file name, when written);
- ``skipped.csv``: inputs that were missing or unreadable, with the reason (also printed);
- ``overlays/*.png``: image | heatmap on the class's fixed scale.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ssmad.engine.detector import Detector
from ssmad.engine.visualize import save_overlay

CSV_FIELDS = ("path", "class", "score", "normalized", "threshold", "decision", "overlay")


@dataclass
class PredictSummary:
    """What ``predict_files`` did: rows written and (input, reason) pairs skipped."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and globs -> (files, missing inputs)."""
    from ssmad.data.image_io import IMAGE_EXTENSIONS

    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for text in inputs:
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        if not any(m.exists() for m in matches):
            missing.append((text, "no such file or folder" if not glob.has_magic(text) else "the pattern matches nothing"))
            continue
        for path in matches:
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
            elif path.is_file():
                files.append(path)
    return files, missing


def predict_files(
    detector: Detector,
    inputs: list[str],
    out_dir: str | Path,
    class_name: str | None = None,
    overlays: bool = True,
    batch_size: int = 16,
) -> PredictSummary:
    """Score every image the inputs name; write the outputs described in the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, missing = expand_inputs(inputs)
    summary = PredictSummary(skipped=list(missing))
    for start in range(0, len(files), batch_size):
        result = detector.predict(files[start : start + batch_size], class_name=class_name, batch_size=batch_size)
        summary.skipped.extend(result.skipped)
        for i in range(len(result)):
            overlay = ""
            if overlays:
                from ssmad.data import read_image

                path = Path(result.paths[i])
                overlay = f"{start + i:05d}_{path.stem}.png"
                rgb = _display_image(read_image(path), detector.image_size)
                save_overlay(out_dir / "overlays" / overlay, rgb, result.heatmaps[i])
            summary.rows.append(
                {
                    "path": result.paths[i],
                    "class": result.class_names[i],
                    "score": float(result.scores[i]),
                    "normalized": float(result.normalized[i]),
                    "threshold": float(result.thresholds[i]),
                    "decision": "anomalous" if result.decisions[i] else "normal",
                    "overlay": overlay,
                }
            )
    with open(out_dir / "predictions.jsonl", "w") as handle:
        for row in summary.rows:
            handle.write(json.dumps(row) + "\n")
    with open(out_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({**row, "class": row["class"] or ""} for row in summary.rows)
    skipped_file = out_dir / "skipped.csv"
    if summary.skipped:
        with open(skipped_file, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows(summary.skipped)
    elif skipped_file.exists():
        skipped_file.unlink()
    return summary


def _display_image(image: Image.Image, size: int) -> np.ndarray:
    """PIL image -> RGB (size, size, 3) float in [0, 1], resized like the model's input."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
