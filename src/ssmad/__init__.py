"""ssmad: multi-class unsupervised visual anomaly detection with state-space (Mamba) models."""

__version__ = "0.2.0"


def __getattr__(name: str):
    """Lazy public API: ``ssmad.load(run_or_exported_model, device="auto") -> Detector`` and
    ``ssmad.convert(official_checkpoint, preset, ...) -> AnomalyModel`` (see ``ssmad.official``)."""
    if name == "load":
        from ssmad.loading import load

        return load
    if name == "convert":
        from ssmad.official import convert

        return convert
    raise AttributeError(f"module 'ssmad' has no attribute {name!r}")
