"""The seven numbers of the MUAD protocol (docs/design.md, "Evaluation protocol"), for one class or
per class.

`protocol="exact"`: every metric by its definition (the first five equal scikit-learn's;
AU-PRO as MVTec's own evaluation code defines it, over every threshold).
`protocol="ader"`: P-F1max and AU-PRO computed the reference framework's approximate way
(see `ssmad.metrics.ader`); the other five are the same as "exact".
Undefined metrics (no anomalous or no normal images/pixels, constant maps for the "ader"
variants) are NaN with an `UndefinedMetricWarning`, never an exception.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ssmad.metrics.ader import aupro_from_split, pixel_f1max_from_split
from ssmad.metrics.ranking import ranking_metrics
from ssmad.metrics.regions import split_pixels
from ssmad.metrics.undefined import warn_undefined

METRIC_NAMES = ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro")
PROTOCOLS = ("exact", "ader")

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _as_numpy(values: ArrayLike) -> np.ndarray:
    """A numpy view (or copy, for tensors on other devices / half precision) of `values`."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def _check_scores(values: np.ndarray, name: str) -> None:
    if values.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {values.dtype}")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values; fix the model output first")


def _squeeze_channel(values: np.ndarray, name: str) -> np.ndarray:
    """(N, 1, H, W) -> (N, H, W); checks the result is 3-D."""
    if values.ndim == 4 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {values.shape}")
    return values


def _plane(values: ArrayLike) -> np.ndarray:
    """One image's (H, W) or (1, H, W) array as (H, W)."""
    values = _as_numpy(values)
    return values[0] if values.ndim == 3 and values.shape[0] == 1 else values


def _pixel_arrays(masks: ArrayLike, maps: ArrayLike, count: int) -> tuple[np.ndarray | list, np.ndarray | list]:
    """Masks (bool) and maps as (N, H, W) arrays, or as lists of (H_i, W_i) arrays when given as
    sequences of 2-D arrays (images of their own sizes); checks shapes and values."""
    if isinstance(masks, (list, tuple)) and isinstance(maps, (list, tuple)):
        masks_list, maps_list = [_plane(m) for m in masks], [_plane(m) for m in maps]
        shapes_differ = [i for i, (k, m) in enumerate(zip(masks_list, maps_list)) if k.shape != m.shape or k.ndim != 2]
        if len(masks_list) != count or len(maps_list) != count or shapes_differ:
            raise ValueError(
                f"masks and maps must be {count} pairs of 2-D arrays of the same shape"
                + (f"; image {shapes_differ[0]} differs" if shapes_differ else "")
            )
        for values in maps_list:
            _check_scores(values, "maps")
        return [m if m.dtype == np.bool_ else m > 0.5 for m in masks_list], maps_list
    masks_np = _squeeze_channel(_as_numpy(masks), "masks")
    maps_np = _squeeze_channel(_as_numpy(maps), "maps")
    if masks_np.shape != maps_np.shape or masks_np.shape[0] != count:
        raise ValueError(
            f"masks {masks_np.shape} and maps {maps_np.shape} must have the same shape (N, H, W) "
            f"with N = {count} images"
        )
    _check_scores(maps_np, "maps")
    return (masks_np if masks_np.dtype == np.bool_ else masks_np > 0.5), maps_np


def _image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    anomalous = labels == 1
    result = ranking_metrics(scores[anomalous], scores[~anomalous])
    if not anomalous.any():
        warn_undefined("I-AUROC, I-AP, I-F1max", "there are no anomalous images")
    elif anomalous.all():
        warn_undefined("I-AUROC", "there are no normal images")
    return {"i_auroc": result["auroc"], "i_ap": result["ap"], "i_f1max": result["f1max"]}


def _pixel_metrics(masks: np.ndarray | list, maps: np.ndarray | list, protocol: str) -> dict[str, float]:
    pixels = split_pixels(masks, maps)
    if pixels.positive_scores.size == 0:
        nan = warn_undefined("pixel metrics", "there are no anomalous pixels")
        return {"p_auroc": nan, "p_ap": nan, "p_f1max": nan, "aupro": nan}
    if pixels.negative_sorted.size == 0:
        warn_undefined("P-AUROC, AU-PRO", "there are no normal pixels")
    result = ranking_metrics(pixels.positive_scores, pixels.negative_sorted, pixels.pro_weights,
                             negatives_sorted=True)
    if protocol == "ader":
        return {"p_auroc": result["auroc"], "p_ap": result["ap"],
                "p_f1max": pixel_f1max_from_split(pixels), "aupro": aupro_from_split(pixels)}
    return {"p_auroc": result["auroc"], "p_ap": result["ap"], "p_f1max": result["f1max"],
            "aupro": result["aupro"]}


def evaluate(
    labels: ArrayLike,
    scores: ArrayLike,
    masks: ArrayLike | None,
    maps: ArrayLike | None,
    protocol: str = "exact",
) -> dict[str, float]:
    """The seven metrics of one set of test images, as fractions in [0, 1].

    Args:
        labels: (N,) 0 normal / 1 anomalous. scores: (N,) image scores (higher = anomalous).
        masks: (N, H, W) or (N, 1, H, W) ground truth, anomalous where > 0.5, or a list of N
            (H_i, W_i) masks of images of their own sizes; or None.
        maps: anomaly maps of the same shape(s) as masks (float32 keeps memory low); or None
            (then the four pixel metrics are NaN).
        protocol: "exact" or "ader".
    Returns {"i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"}.
    Arrays may be numpy arrays or tensors (on any device).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    labels_np = _as_numpy(labels).reshape(-1)
    scores_np = _as_numpy(scores).reshape(-1)
    if labels_np.shape != scores_np.shape:
        raise ValueError(f"labels {labels_np.shape} and scores {scores_np.shape} differ in length")
    if not np.isin(labels_np, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    _check_scores(scores_np, "scores")
    result = _image_metrics(labels_np.astype(np.int64), scores_np)
    if masks is None or maps is None:
        result.update({name: float("nan") for name in METRIC_NAMES[3:]})
        return result
    masks_bool, maps_checked = _pixel_arrays(masks, maps, labels_np.size)
    result.update(_pixel_metrics(masks_bool, maps_checked, protocol))
    return result


def _indexable(values: ArrayLike) -> np.ndarray | list:
    """A list of per-image arrays stays a list (images of their own sizes); else one array."""
    return list(values) if isinstance(values, (list, tuple)) else _as_numpy(values)


def _take(values: np.ndarray | list, index: np.ndarray) -> np.ndarray | list:
    return [values[i] for i in index] if isinstance(values, list) else values[index]


def evaluate_per_class(
    class_names: Sequence[str],
    labels: ArrayLike,
    scores: ArrayLike,
    masks: ArrayLike | None,
    maps: ArrayLike | None,
    protocol: str = "exact",
) -> dict[str, dict[str, float]]:
    """`evaluate` for each class, plus "mean": the mean over classes of each metric.

    class_names: (N,) the class of every image. The mean of a metric skips classes where it
    is NaN (and is NaN when it is NaN for all classes).
    Returns {"<class>": metrics, ..., "mean": metrics}, classes in sorted order.
    """
    names = np.asarray(list(class_names))
    labels_np = _as_numpy(labels).reshape(-1)
    if names.shape != labels_np.shape:
        raise ValueError(f"class_names ({names.size}) and labels ({labels_np.size}) differ in length")
    if "mean" in set(names.tolist()):
        raise ValueError("a class may not be named 'mean' (the key of the mean over classes); rename it")
    scores_np = _as_numpy(scores).reshape(-1)
    masks_np = None if masks is None else _indexable(masks)
    maps_np = None if maps is None else _indexable(maps)
    results: dict[str, dict[str, float]] = {}
    for name in sorted(set(names.tolist())):
        index = np.flatnonzero(names == name)
        results[name] = evaluate(
            labels_np[index], scores_np[index],
            None if masks_np is None else _take(masks_np, index),
            None if maps_np is None else _take(maps_np, index),
            protocol,
        )
    table = np.array([[results[name][metric] for metric in METRIC_NAMES] for name in results])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(table, axis=0) if table.size else np.full(len(METRIC_NAMES), np.nan)
    results["mean"] = {metric: float(value) for metric, value in zip(METRIC_NAMES, means)}
    return results
