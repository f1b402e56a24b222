"""Rating records for the benchmarks: the tests' realistic SPEC §6 records (about 600
bytes of JSON), numbered so that a run's levels cycle through the scale."""

from __future__ import annotations

from tests.support.ratings import DEVICE_ID
from tests.support.ratings import numbered_rating as make_rating

__all__ = ["DEVICE_ID", "make_rating"]
