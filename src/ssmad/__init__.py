"""ssmad: multi-class unsupervised visual anomaly detection with state-space (Mamba) models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy public API: ``ssmad.load(checkpoint_path, device="auto") -> Detector``."""
    if name == "load":
        from ssmad.engine.detector import load

        return load
    raise AttributeError(f"module 'ssmad' has no attribute {name!r}")
