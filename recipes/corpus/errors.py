"""The one exception of the corpus recipe: a source that cannot be installed or read."""


class CorpusError(Exception):
    """A fatal problem with one package or file; the message names it (one line)."""
