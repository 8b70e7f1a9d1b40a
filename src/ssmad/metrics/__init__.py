"""ssmad.metrics: exact, fast image- and pixel-level anomaly-detection metrics.

`evaluate` / `evaluate_per_class` compute I-AUROC, I-AP, I-F1max, P-AUROC, P-AP, P-F1max and
AU-PRO from arrays (numpy or torch); `protocol="ader"` gives the reference framework's
approximate P-F1max and AU-PRO for comparison with published tables.
"""

from ssmad.metrics.ader import ader_aupro, ader_pixel_f1max
from ssmad.metrics.evaluate import METRIC_NAMES, PROTOCOLS, evaluate, evaluate_per_class
from ssmad.metrics.ranking import RankingCurves, ranking_curves, ranking_metrics
from ssmad.metrics.undefined import UndefinedMetricWarning

__all__ = [
    "METRIC_NAMES",
    "PROTOCOLS",
    "RankingCurves",
    "UndefinedMetricWarning",
    "ader_aupro",
    "ader_pixel_f1max",
    "evaluate",
    "evaluate_per_class",
    "ranking_curves",
    "ranking_metrics",
]
