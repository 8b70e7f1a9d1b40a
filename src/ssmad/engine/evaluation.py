"""``ssmad test``: the seven metrics per class and their mean, tables, overlays and curves.

The numbers are those of the model in the checkpoint (the final one), never a maximum over
epochs. Pixel metrics compare maps and masks at each image's original resolution by default
(the map, blurred at the model's resolution, resized to the mask's size), or with
``mask_resolution="model"`` at the model's input size with masks resized to it, the papers'
protocol, for comparison with published tables; every report says which. Outputs in the chosen folder:
``metrics.md`` (markdown table, percent), ``metrics.json`` and ``metrics.csv`` (fractions),
``overlays/<class>/*.png`` (image | ground truth | heatmap on the class's fixed scale) and, when
matplotlib is installed, ``curves.png`` (image-level ROC and PR curves per class). ``decisions.md``
and ``metrics.json``'s ``decision``: what the calibrated image and pixel decisions did per class,
with MVTec AD 2's SegF1 and AU-PRO@0.05 beside AU-PRO@0.3 (``ssmad.engine.decision_report``).
Both say which image score the run uses (``image_score``, ``ssmad.models.image_score``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ssmad.data.geometry import aspect_mismatch
from ssmad.data.image_io import read_image
from ssmad.engine.atomic_write import atomic_write_text
from ssmad.engine.decision_report import class_decisions, decisions_table
from ssmad.engine.detector import Detector, map_at_image_size
from ssmad.engine.pixel_decision import pixel_decision
from ssmad.engine.prediction import display_image
from ssmad.engine.scoring import SCORING_BATCH_SIZE
from ssmad.engine.visualize import save_overlay
from ssmad.metrics.evaluate import PROTOCOLS
from ssmad.models.image_score import describe_image_score

OVERLAYS_PER_CLASS = 8  # overlay pictures written per class by default
METRIC_KEYS = ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro")
METRIC_TITLES = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AU-PRO")


@dataclass
class TestOutputs:
    """Predictions on a test set, in dataset order: labels/scores (N,), masks (H_i, W_i) uint8,
    maps (H_i, W_i) and predicted defect masks (H_i, W_i) bool at the masks' resolution, the input
    geometry each image was scored at, and how many images were resized with a changed aspect ratio."""

    class_names: list[str]
    labels: np.ndarray
    scores: np.ndarray
    masks: list[np.ndarray]
    maps: list[np.ndarray]
    geometries: list[str]
    predicted_masks: list[np.ndarray]
    stretched: int = 0


def _items(items: list[dict]) -> list[dict]:
    """DataLoader collation that keeps the items as they are (masks of their own sizes)."""
    return items


def predict_test_set(detector: Detector, dataset, batch_size: int = SCORING_BATCH_SIZE, num_workers: int = 0) -> TestOutputs:
    """Score every item of a test dataset (built at the detector's geometries) with the detector's
    engine, in batches of one geometry, tiled as the detector says; maps resized to the masks (at the
    original resolution, a class's map resized to its region of interest and placed, 0 outside;
    at the model's, the masks were cropped to it)."""
    batches = dataset.geometry_batches(batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=_items)
    count = len(dataset)
    masks, maps, predicted = [None] * count, [None] * count, [None] * count
    scores = np.zeros(count, np.float32)
    stretched = 0
    for indices, items in zip(batches, tqdm(loader, desc="testing", leave=False, total=len(batches))):
        batch_maps, batch_scores = detector.score_images(torch.stack([item["image"] for item in items]), batch_size)
        for index, item, image_map, score in zip(indices, items, batch_maps, batch_scores):
            mask = (item["mask"][0] > 0.5).numpy().astype(np.uint8)
            roi = dataset.rois.get(item["class_name"])
            placed = roi if dataset.mask_resolution == "original" else None
            masks[index], maps[index], scores[index] = mask, map_at_image_size(image_map, mask.shape, placed), score
            threshold = detector.mask_threshold(dataset.samples[index].class_name, score)
            predicted[index] = pixel_decision(image_map, maps[index], threshold, detector.min_area, placed)[0]
            seen_aspect = roi.aspect if roi is not None else item["width"] / item["height"]
            stretched += aspect_mismatch(seen_aspect, dataset.geometry(index))
    names = [sample.class_name for sample in dataset.samples]
    geometries = [str(dataset.geometry(i)) for i in range(count)]
    return TestOutputs(names, np.asarray(dataset.labels), scores, masks, maps, geometries, predicted, stretched)


def decision_report(outputs: TestOutputs, detector: Detector) -> dict[str, dict]:
    """Per class: the decision report of ``ssmad.engine.decision_report``."""
    names = np.asarray(outputs.class_names)
    report = {}
    for name in sorted(set(outputs.class_names)):
        chosen = np.flatnonzero(names == name)
        threshold, rule = detector.pixel_threshold_for(name)
        report[name] = class_decisions(
            detector.calibration, name, outputs.labels[chosen], outputs.scores[chosen],
            [outputs.masks[i] for i in chosen], [outputs.maps[i] for i in chosen],
            [outputs.predicted_masks[i] for i in chosen], threshold, rule, detector.min_area,
        )
    return report


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Per-class metrics dict (fractions) -> markdown table in percent, the mean row last."""
    lines = ["| class | " + " | ".join(METRIC_TITLES) + " |", "|---" * (len(METRIC_KEYS) + 1) + "|"]
    for name, metrics in results.items():
        cells = " | ".join(f"{100 * metrics[k]:.1f}" for k in METRIC_KEYS)
        label = f"**{name}**" if name == "mean" else name
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def write_reports(results: dict[str, dict[str, float]], out_dir: Path, extra: dict) -> None:
    """metrics.md, metrics.json and metrics.csv in ``out_dir``, each written atomically: a full
    disk or a kill leaves the previous report whole (and raises ``FileWriteError`` saying so)."""
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["class", *METRIC_KEYS])
    for name, metrics in results.items():
        writer.writerow([name, *(f"{metrics[k]:.6f}" for k in METRIC_KEYS)])
    atomic_write_text(out_dir / "metrics.json", json.dumps({**extra, "metrics": results}, indent=2))
    atomic_write_text(out_dir / "metrics.csv", table.getvalue())
    atomic_write_text(out_dir / "metrics.md", markdown_table(results) + "\n")


def write_overlays(detector: Detector, dataset, outputs: TestOutputs, out_dir: Path, per_class: int) -> int:
    """Overlays of ``per_class`` test images per class, evenly spread over each class's images."""
    names = np.asarray(outputs.class_names)
    written = 0
    for name in sorted(set(outputs.class_names)):
        indices = np.flatnonzero(names == name)
        chosen = indices[np.unique(np.linspace(0, len(indices) - 1, min(per_class, len(indices))).round().astype(int))]
        for index in chosen:
            values = detector.calibration.for_class(name).heatmap(outputs.maps[index])
            source = Path(dataset.samples[index].path)
            file_name = f"{index:05d}_{source.parent.name}_{source.stem}.png"
            image = read_image(source)
            if name in dataset.rois and dataset.mask_resolution == "model":  # the map is of the box only
                image = dataset.rois[name].crop(image, str(source))
            rgb = display_image(image, values.shape)
            save_overlay(out_dir / "overlays" / name / file_name, rgb, values, outputs.masks[index])
            written += 1
    return written


def write_curves(outputs: TestOutputs, out_dir: Path) -> Path | None:
    """``curves.png``: image-level ROC and PR per class (``ssmad.metrics.ranking_curves``, the
    points the metrics are computed from); None when matplotlib is not installed."""
    from ssmad.metrics import ranking_curves

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = np.asarray(outputs.class_names)
    figure, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name in sorted(set(outputs.class_names)):
        selected = names == name
        labels, scores = outputs.labels[selected], outputs.scores[selected]
        curves = ranking_curves(scores[labels == 1], scores[labels == 0])
        roc.plot(curves.fpr, curves.tpr, label=name)
        pr.plot(curves.recall, curves.precision, label=name)
    roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="image ROC")
    pr.set(xlabel="recall", ylabel="precision", title="image PR")
    roc.legend(fontsize=7)
    figure.tight_layout()
    path = out_dir / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def evaluate_run(
    detector: Detector,
    dataset,
    out_dir: str | Path,
    protocol: str = PROTOCOLS[0],
    overlays_per_class: int = OVERLAYS_PER_CLASS,
    batch_size: int = SCORING_BATCH_SIZE,
    num_workers: int = 0,
    extra: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Test ``detector`` on ``dataset``, write every report into ``out_dir``; returns the metrics."""
    from ssmad.metrics import evaluate_per_class

    out_dir = Path(out_dir)
    outputs = predict_test_set(detector, dataset, batch_size, num_workers)
    results = evaluate_per_class(
        outputs.class_names, outputs.labels, outputs.scores, outputs.masks, outputs.maps, protocol=protocol
    )
    results = {name: {k: float(v) for k, v in metrics.items()} for name, metrics in results.items()}
    decisions = decision_report(outputs, detector)
    info = {
        "protocol": protocol, "image_score": detector.image_score,
        "mask_resolution": dataset.mask_resolution, "num_images": len(outputs.labels),
        "geometries": {name: str(geometry) for name, geometry in dataset.geometries.items()},
        "rois": {name: str(roi) for name, roi in dataset.rois.items()},
        "tile": None if detector.tile is None else detector.tile.to_dict(),
        "images_resized_with_another_aspect_ratio": outputs.stretched,
        "decision": decisions,
    }
    write_reports(results, out_dir, {**(extra or {}), **info})
    atomic_write_text(out_dir / "decisions.md", f"{describe_image_score(detector.image_score)}\n\n{decisions_table(decisions)}\n")
    if overlays_per_class > 0:
        write_overlays(detector, dataset, outputs, out_dir, overlays_per_class)
    write_curves(outputs, out_dir)
    return results
