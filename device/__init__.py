"""Window evaluator daemon for the 好差评 rating system."""

__version__ = "0.1.0"
