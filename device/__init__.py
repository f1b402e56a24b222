"""Window evaluator daemon for the 好差评 rating system."""

from common import __version__

__all__ = ["__version__"]
