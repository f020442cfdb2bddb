"""diffsep: speech separation and enhancement with score-based diffusion (DiffSep)."""

__version__ = "0.1.0"
