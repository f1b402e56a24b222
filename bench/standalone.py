"""`python -m bench.NAME [--quick]`: one benchmark alone, its section printed as markdown
(in a temporary scratch directory, removed at the end)."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.context import Context
from bench.report import Section


def standalone(prog: str, run: Callable[[Context], Section],
               argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--quick", action="store_true", help="the size of `python -m bench --quick`")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hcp-bench-") as tmp:
        t0 = time.monotonic()
        section = run(Context(Path(tmp), args.quick))
        section.seconds = time.monotonic() - t0
        print(section.markdown())
    return 0
