"""vismtl: multi-task dense prediction in vision."""

from vismtl.version import __version__

__all__ = ["__version__"]
