"""The reference platform (simulator/platform.py) for tests: in this process on a free
loopback port, with its SQLite file in the test's tmp dir.

    with running_platform(tmp_path) as platform:
        platform.url                    # what the bridge POSTs to
        platform.control.counts()       # what was stored (over HTTP, like any client)
        platform.control.chaos("error", status=503, for_s=10)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from simulator.platform import PlatformControl, PlatformServer

HOST = "127.0.0.1"


@dataclass
class RunningPlatform:
    server: PlatformServer
    control: PlatformControl

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.base_url


@contextlib.contextmanager
def running_platform(directory: Path, token: str | None = None, max_batch: int = 1000,
                     tls: tuple[Path, Path] | None = None,
                     ca_file: Path | None = None) -> Iterator[RunningPlatform]:
    """Start a reference platform serving from a thread; stop it on exit.

    `tls` = (certificate, key), e.g. from `test_ca.issue("platform")`, serves HTTPS;
    `ca_file` is then what `control` trusts (`test_ca.ca_file`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    server = PlatformServer(HOST, 0, directory / "platform.db", token=token,
                            max_batch=max_batch, tls_cert=tls[0] if tls else None,
                            tls_key=tls[1] if tls else None).start()
    try:
        yield RunningPlatform(server, PlatformControl(server.base_url, token, ca_file=ca_file))
    finally:
        server.shutdown()
        server.close()
