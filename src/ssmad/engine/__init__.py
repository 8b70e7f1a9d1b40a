"""ssmad.engine."""
