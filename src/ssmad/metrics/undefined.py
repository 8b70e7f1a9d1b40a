"""The warning raised when a metric is undefined for the data it is given (result: NaN)."""

from __future__ import annotations

import warnings


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for these data (e.g. no anomalous images, constant maps)."""


def warn_undefined(metric: str, reason: str) -> float:
    """Warn that `metric` is undefined because of `reason`; return NaN (its value)."""
    warnings.warn(f"{metric} is undefined: {reason}; reported as NaN", UndefinedMetricWarning, stacklevel=3)
    return float("nan")
