"""The slow obvious area under a PRO curve, which the AU-PRO tests hold the metrics to."""


def brute_force_area(fprs, pros, max_fpr):
    """Trapezoids of the points (fprs, pros), in rising FPR, up to ``max_fpr``, the last one cut
    there by linear interpolation, divided by ``max_fpr``."""
    area = 0.0
    for k in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[k - 1], fprs[k], pros[k - 1], pros[k]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr
