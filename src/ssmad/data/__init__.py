"""ssmad.data."""
