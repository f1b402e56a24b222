"""Benchmarks that print our numbers next to a baseline measured in the same run
(`python -m bench`; docs/benchmarks.md is what a full run writes)."""
