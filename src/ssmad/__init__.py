"""ssmad: multi-class unsupervised visual anomaly detection with state-space (Mamba) models."""

__version__ = "0.1.0"
