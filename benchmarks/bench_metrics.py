"""Time and peak memory of `ssmad.metrics.evaluate` on MVTec-sized test sets.

Every case runs in its own subprocess, which reports its wall time and the growth of its
peak resident memory (`ru_maxrss`, which counts numpy/torch allocations, unlike
tracemalloc) over the memory held by the input arrays. For comparison, an AU-PRO written
the reference framework's way (ADer `cal_pro_score`: a loop over 200 thresholds, a loop over
regions) runs on the 100-map case.

    python benchmarks/bench_metrics.py            # 100 and 1725 maps of 256x256
    python benchmarks/bench_metrics.py --maps 100 --size 256 --reference
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from scipy import ndimage


def make_test_set(num_maps: int, size: int, seed: int = 0):
    """Labels (N,), scores (N,), masks (N, H, W) bool, maps (N, H, W) float32: about 70 %
    anomalous images with a few blob regions each; maps = smooth noise + signal in defects."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(num_maps) < 0.7).astype(np.int64)
    masks = np.zeros((num_maps, size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    for index in np.flatnonzero(labels):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            radius = rng.uniform(3, size / 10)
            masks[index] |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    maps = rng.standard_normal((num_maps, size, size), dtype=np.float32)
    maps = ndimage.uniform_filter(maps, size=(1, 5, 5))
    maps += masks * np.float32(0.8)
    scores = maps.reshape(num_maps, -1).max(axis=1)
    return labels, scores, masks, maps


def reference_style_aupro(masks: np.ndarray, maps: np.ndarray, max_step: int = 200, expect_fpr: float = 0.3) -> float:
    """AU-PRO as the reference framework computes it: one pass over the data per threshold."""
    min_th, max_th = maps.min(), maps.max()
    delta = (max_th - min_th) / max_step
    labelled = [ndimage.label(mask, structure=np.ones((3, 3))) for mask in masks]
    pros, fprs = [], []
    binary = np.zeros_like(maps, dtype=bool)
    inverse = ~masks
    for threshold in np.arange(min_th, max_th, delta):
        np.greater(maps, threshold, out=binary)
        pro = []
        for binary_map, (regions, count) in zip(binary, labelled):
            for k in range(1, count + 1):
                region = regions == k
                pro.append(binary_map[region].sum() / region.sum())
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(pro))
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < expect_fpr
    fprs = fprs[kept]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return float(-np.sum(np.diff(fprs) * (pros[kept][1:] + pros[kept][:-1]) / 2))


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_case(case: str, num_maps: int, size: int) -> dict:
    """Run one case in this process; return its figures."""
    from ssmad.metrics import evaluate
    from ssmad.metrics.ranking import ranking_metrics
    from ssmad.metrics.regions import split_pixels

    labels, scores, masks, maps = make_test_set(num_maps, size)
    baseline = _peak_rss_bytes()
    start = time.perf_counter()
    if case == "evaluate":
        result = evaluate(labels, scores, masks, maps)
    elif case == "evaluate_ader":
        result = evaluate(labels, scores, masks, maps, protocol="ader")
    elif case == "aupro":
        pixels = split_pixels(masks, maps)
        result = {"aupro": ranking_metrics(pixels.positive_scores, pixels.negative_sorted, pixels.pro_weights,
                                           negatives_sorted=True)["aupro"]}
    else:
        result = {"aupro_reference_style": reference_style_aupro(masks, maps)}
    seconds = time.perf_counter() - start
    peak = _peak_rss_bytes()
    return {"case": case, "maps": num_maps, "size": size, "seconds": round(seconds, 2),
            "peak_rss_gib": round(peak / 2**30, 2), "growth_over_inputs_gib": round((peak - baseline) / 2**30, 2),
            "result": {key: round(value, 5) for key, value in result.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, nargs="*", default=[100, 1725])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--reference", action="store_true", help="also time the reference-style AU-PRO on 100 maps")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.maps[0], args.size)))
        return
    cases = [(case, count) for count in args.maps for case in ("aupro", "evaluate", "evaluate_ader")]
    if args.reference:
        cases.append(("reference_aupro", 100))
    print("figures from a shared CPU are noisy; peak RSS includes the inputs (maps float32, masks bool)")
    for case, count in cases:
        output = subprocess.run(
            [sys.executable, __file__, "--case", case, "--maps", str(count), "--size", str(args.size)],
            check=True, capture_output=True, text=True,
        ).stdout
        print(output.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
