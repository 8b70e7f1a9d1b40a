"""ssmad.ops."""
