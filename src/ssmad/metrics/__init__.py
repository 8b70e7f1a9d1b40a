"""ssmad.metrics."""
