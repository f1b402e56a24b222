"""The reference platform (simulator/platform.py, `hcp-sim platform`) as the benchmarks run
it: unchanged, except that its connections set TCP_NODELAY.

Why: its handler writes a response's headers and body in two sends. With Nagle's algorithm
the body then waits for the client to acknowledge the headers, and the client delays that
acknowledgement by up to 40 ms: every request took ~43 ms instead of ~1.4 ms on loopback
(measured), which would make the naive one-request-per-rating baseline look 30× slower
than it is and add a fixed stall to every batch of the bridge. A production platform
behind any ordinary HTTP server does not pay that, so neither does the benchmark.

    python -m bench.platform_server --listen HOST:PORT --db FILE
"""

from __future__ import annotations

import socketserver
import sys

from simulator.platform import main

if __name__ == "__main__":
    socketserver.StreamRequestHandler.disable_nagle_algorithm = True
    sys.exit(main(sys.argv[1:]))
