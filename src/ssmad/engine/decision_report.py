"""The decision report of ``ssmad test``, per class: what the calibrated image and pixel decisions
did on the test split, and how far the image threshold's false-positive rate can be from its target.

Per class (``decision`` in ``metrics.json``, ``decisions.md``):

- the image decision table: the threshold, the rule that set it (``threshold_rule``,
  ``ssmad.engine.thresholds``) and the target FPR; the test normals flagged (the realised
  test FPR, with its exact Clopper-Pearson 95 % interval, ``ssmad.engine.fpr_intervals``) and the
  anomalous images found (TPR, with its interval); the interval of the realised FPR that the
  ``calibration_normals`` normals the threshold was set on support (``supported_fpr``: the
  order-statistic interval; ``smallest_supported_fpr`` = 1 / (n + 1): no threshold from n
  normals promises a lower rate) and whether the test FPR interval meets it;
- the pixel decision: the pixel threshold and its rule, the minimum region area, SegF1 of the
  predicted masks (the masks ``predict`` writes, ``ssmad.engine.pixel_decision``), AU-PRO to a
  false-positive rate of 0.05 (MVTec AD 2) and 0.3 (MVTec AD) of the maps;
- region-level counts (``ssmad.metrics.region_counts``): ground-truth defects found (a predicted
  region overlaps them by at least one pixel) with their mean IoU, missed, false regions per good
  test image.

Rates are fractions in [0, 1]; NaN where a class has no test normal or no anomalous image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssmad.engine.fpr_intervals import calibration_fpr_interval, clopper_pearson_interval
from ssmad.engine.thresholds import Calibration
from ssmad.metrics.region_counts import region_counts
from ssmad.metrics.segmentation import AUPRO_FPR_LIMITS, aupro, aupro_key, seg_f1

NAN = float("nan")


def _rate(count: int, trials: int) -> tuple[float, list[float]]:
    """count / trials and its Clopper-Pearson interval (NaN without trials)."""
    if trials == 0:
        return NAN, [NAN, NAN]
    return count / trials, list(clopper_pearson_interval(count, trials))


def class_decisions(
    calibration: Calibration,
    class_name: str,
    labels: np.ndarray,
    scores: np.ndarray,
    truth_masks: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    predicted_masks: Sequence[np.ndarray],
    pixel_threshold: float,
    pixel_rule: str,
    min_area: int,
) -> dict:
    """The report of one class's test images: labels (N,) 0/1, raw scores (N,), ground-truth masks,
    maps and predicted masks (H_i, W_i) at one resolution; pixel_threshold, pixel_rule ("given"
    for ``--pixel-threshold``) and min_area as the masks were made."""
    cal = calibration.for_class(class_name)
    decisions = cal.is_anomalous(scores)
    good, bad = labels == 0, labels == 1
    false_alarms, found = int(decisions[good].sum()), int(decisions[bad].sum())
    test_fpr, test_fpr_interval = _rate(false_alarms, int(good.sum()))
    test_tpr, test_tpr_interval = _rate(found, int(bad.sum()))
    supported = calibration_fpr_interval(cal.num_images, calibration.target_fpr, cal.threshold_rule)
    meets = bool(test_fpr_interval[0] <= supported.high and supported.low <= test_fpr_interval[1]) if good.any() else None
    predicted = [np.asarray(mask, dtype=np.float32) for mask in predicted_masks]
    pixel_metrics = {"seg_f1": seg_f1(truth_masks, predicted, 0.5)}
    pixel_metrics.update({aupro_key(limit): aupro(truth_masks, maps, limit) for limit in AUPRO_FPR_LIMITS})
    return {
        "threshold": cal.threshold,
        "target_fpr": calibration.target_fpr,
        "threshold_rule": cal.threshold_rule,
        "calibration_normals": cal.num_images,
        "test_good": int(good.sum()),
        "test_bad": int(bad.sum()),
        "false_alarms": false_alarms,
        "test_fpr": test_fpr,
        "test_fpr_interval": test_fpr_interval,
        "test_tpr": test_tpr,
        "test_tpr_interval": test_tpr_interval,
        "supported_fpr": [supported.low, supported.high],
        "expected_fpr": supported.expected,
        "smallest_supported_fpr": supported.smallest,
        "test_fpr_meets_supported": meets,
        "pixel_threshold": pixel_threshold,
        "pixel_rule": pixel_rule,
        "min_area": min_area,
        **pixel_metrics,
        "regions": region_counts(truth_masks, [mask > 0 for mask in predicted_masks]).to_dict(),
    }


def _percent(value: float) -> str:
    return "–" if value is None or np.isnan(value) else f"{100 * value:.1f}"


def decisions_table(report: dict[str, dict]) -> str:
    """The per-class report as a markdown table (rates in percent)."""
    lines = [
        "| class | threshold (rule) | test FPR % (95 % CI) | supported FPR % (n normals) | TPR % | pixel threshold (rule) "
        "| SegF1 | AU-PRO@0.05 | AU-PRO@0.3 | defects found / missed (mean IoU) | false regions per good image |",
        "|---" * 11 + "|",
    ]
    for name, row in report.items():
        low, high = row["test_fpr_interval"]
        regions = row["regions"]
        lines.append(
            f"| {name} | {row['threshold']:.5g} ({row['threshold_rule']}) | {_percent(row['test_fpr'])} ({_percent(low)}–{_percent(high)}) "
            f"| {_percent(row['supported_fpr'][0])}–{_percent(row['supported_fpr'][1])} ({row['calibration_normals']}) "
            f"| {_percent(row['test_tpr'])} | {row['pixel_threshold']:.5g} ({row['pixel_rule']}) "
            f"| {_percent(row['seg_f1'])} | {_percent(row['aupro@0.05'])} | {_percent(row['aupro@0.3'])} "
            f"| {regions['found']} / {regions['missed']} ({_percent(regions['mean_iou'])}) "
            f"| {regions['false_regions_per_good_image']:.2f} |"
        )
    return "\n".join(lines)
