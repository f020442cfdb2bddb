"""The corpus recipe, one module per kind of source (see recipes/README.md)."""
