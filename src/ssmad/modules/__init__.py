"""ssmad.modules."""
