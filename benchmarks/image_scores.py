"""Image scores other than the map's maximum, and the defective images a run misses.

Scores a trained run's test split once (maps at the original resolution, as ``ssmad test``) and, per
class, ranks the images by:

- ``max``: the maximum of the blurred map (ssmad's image score, the papers');
- ``max-inner-B%``: the maximum without a band of B % of each side along the image's borders,
  where a surface texture's encoder padding lights up the maps of normal images;
- ``top-K%``: the mean of the K % highest pixels of the map.

It prints each score's I-AUROC and I-AP, and where the normal images' maxima lie (the share inside
the border band), then writes the defective test images that the calibrated decision misses
(score below the class threshold) as overlays, image | ground truth | heatmap, with a white
cross on the map's maximum: ``OUT/missed/<class>/``.

    python benchmarks/image_scores.py RUN [--data ROOT] [--out DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import ssmad
from ssmad.data import build_dataset
from ssmad.data.image_io import read_image
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.evaluation import predict_test_set
from ssmad.engine.prediction import display_image
from ssmad.engine.visualize import overlay_panels
from ssmad.metrics.ranking import ranking_metrics

BANDS = (0.02, 0.05, 0.10)  # border band, fraction of each side
TOP_FRACTIONS = (0.001, 0.01)  # top-k mean, fraction of the map's pixels


def inner(values: np.ndarray, band: float) -> np.ndarray:
    """The map (H, W) without a band of ``band`` x each side along its borders."""
    rows, cols = (max(1, round(band * side)) for side in values.shape)
    return values[rows:-rows, cols:-cols]


def top_mean(values: np.ndarray, fraction: float) -> float:
    """Mean of the ``fraction`` highest values of the map (at least one pixel)."""
    flat = values.ravel()
    count = max(1, round(fraction * flat.size))
    return float(np.partition(flat, flat.size - count)[flat.size - count:].mean())


def image_scores(maps: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every candidate score of every map: name -> (N,)."""
    scores = {"max": np.array([m.max() for m in maps])}
    for band in BANDS:
        scores[f"max-inner-{100 * band:g}%"] = np.array([inner(m, band).max() for m in maps])
    for fraction in TOP_FRACTIONS:
        scores[f"top-{100 * fraction:g}%"] = np.array([top_mean(m, fraction) for m in maps])
    return scores


def in_band(values: np.ndarray, band: float) -> bool:
    """Whether the map's maximum lies in its border band."""
    row, col = np.unravel_index(np.argmax(values), values.shape)
    rows, cols = (max(1, round(band * side)) for side in values.shape)
    height, width = values.shape
    return bool(row < rows or row >= height - rows or col < cols or col >= width - cols)


def save_missed(path: Path, rgb: np.ndarray, heat: np.ndarray, mask: np.ndarray) -> None:
    """Overlay panels (image | ground truth | heatmap) with a white cross on the map's maximum."""
    panels = overlay_panels(rgb, heat, mask)
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    col += panels.shape[1] - heat.shape[1]  # in the last panel
    arm = max(4, min(heat.shape) // 30)
    panels[max(0, row - arm):row + arm + 1, max(0, col - 1):col + 2] = 255
    panels[max(0, row - 1):row + 2, max(0, col - arm):col + arm + 1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(panels).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--data", help="dataset root (default: the run's)")
    parser.add_argument("--out", help="output folder (default: RUN/image_scores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    detector = ssmad.load(args.run, device=args.device)
    trained = load_checkpoint(args.run)["train_config"]
    dataset = build_dataset(
        trained["dataset"], args.data or trained["data"], "test", classes=detector.class_names,
        image_size=detector.geometries, mean=detector.mean, std=detector.std, mask_resolution="original",
    )
    outputs = predict_test_set(detector, dataset)
    out_dir = Path(args.out or Path(args.run) / "image_scores")
    names = np.asarray(outputs.class_names)
    report = {}
    for name in sorted(set(outputs.class_names)):
        index = np.flatnonzero(names == name)
        maps = [outputs.maps[i] for i in index]
        labels = outputs.labels[index]
        rows = {}
        for score_name, scores in image_scores(maps).items():
            metrics = ranking_metrics(scores[labels == 1], scores[labels == 0])
            rows[score_name] = {"auroc": metrics["auroc"], "ap": metrics["ap"]}
        normal_maps = [m for m, label in zip(maps, labels) if label == 0]
        peaks_in_band = {f"{100 * band:g}%": float(np.mean([in_band(m, band) for m in normal_maps])) for band in BANDS}
        calibration = detector.calibration.for_class(name)
        missed = [i for i, label in zip(index, labels) if label == 1 and not calibration.is_anomalous(outputs.scores[i])]
        for i in missed:
            source = Path(dataset.samples[i].path)
            heat = calibration.heatmap(outputs.maps[i])
            rgb = display_image(read_image(source), heat.shape)
            save_missed(out_dir / "missed" / name / f"{i:05d}_{source.stem}.png", rgb, heat, outputs.masks[i])
        report[name] = {
            "scores": rows, "normal_maxima_in_border_band": peaks_in_band,
            "missed": len(missed), "defective": int((labels == 1).sum()), "threshold": calibration.threshold,
        }
        print(f"{name}: {len(missed)} of {int((labels == 1).sum())} defective images missed at the threshold")
        print("  share of normal maxima in the border band: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in peaks_in_band.items()))
        for score_name, values in rows.items():
            print(f"  {score_name:16s} I-AUROC {100 * values['auroc']:5.1f}  I-AP {100 * values['ap']:5.1f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "image_scores.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
