"""ssmad.metrics: exact, fast image- and pixel-level anomaly-detection metrics.

`evaluate` / `evaluate_per_class` compute I-AUROC, I-AP, I-F1max, P-AUROC, P-AP, P-F1max and
AU-PRO from arrays (numpy or torch); `protocol="ader"` gives the reference framework's
approximate P-F1max and AU-PRO for comparison with published tables. MVTec AD 2's metrics:
`seg_f1` (binary segmentation F1 at a pixel threshold) and `aupro` to a chosen FPR limit
(`segmentation_metrics` gives both); `defect_regions` turns a map and a threshold into a mask and
its regions; `region_counts` counts found and missed defects and false regions.
"""

from ssmad.metrics.ader import ader_aupro, ader_pixel_f1max
from ssmad.metrics.defect_regions import DEFAULT_MIN_AREA, DefectRegion, defect_regions
from ssmad.metrics.evaluate import METRIC_NAMES, PROTOCOLS, evaluate, evaluate_per_class
from ssmad.metrics.ranking import RankingCurves, ranking_curves, ranking_metrics
from ssmad.metrics.region_counts import RegionCounts, region_counts
from ssmad.metrics.segmentation import AUPRO_FPR_LIMITS, aupro, seg_f1, segmentation_metrics
from ssmad.metrics.undefined import UndefinedMetricWarning

__all__ = [
    "AUPRO_FPR_LIMITS",
    "DEFAULT_MIN_AREA",
    "DefectRegion",
    "METRIC_NAMES",
    "PROTOCOLS",
    "RankingCurves",
    "RegionCounts",
    "UndefinedMetricWarning",
    "ader_aupro",
    "ader_pixel_f1max",
    "aupro",
    "defect_regions",
    "evaluate",
    "evaluate_per_class",
    "ranking_curves",
    "ranking_metrics",
    "region_counts",
    "seg_f1",
    "segmentation_metrics",
]
