"""The city's 评价汇聚平台 (SPEC §11): stores every rating once (SQLite or PostgreSQL),
tracks each 差评 to its rectification, reports, shows the hall live and forwards to the
province. `hcp-platform` is its command line (city_platform/cli.py)."""

from common import __version__

__all__ = ["__version__"]
