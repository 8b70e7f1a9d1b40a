"""ssmad.models."""
