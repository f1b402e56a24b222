"""A subcommand that writes far more than a pipe holds (for the closed-pipe test)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    for i in range(200_000):
        print(f"line {i}")
    return 0
