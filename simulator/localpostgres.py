"""A private PostgreSQL server for tests and benchmarks: initdb + pg_ctl from Debian's
postgresql, in a temp folder of its own, on a free port, its socket in that folder —
never the server this machine may already run (like simulator/localbroker.py for
mosquitto).

As root, initdb refuses to run, so the server runs as the `postgres` user (`runuser`)
in a folder that user owns (pytest's tmp_path sits under a 0700 root folder it cannot
enter). Not root: it runs as whoever runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from simulator.localbroker import free_port

PG_BIN = Path(os.environ.get("HCP_PG_BIN", "/usr/lib/postgresql/15/bin"))
HOST = "127.0.0.1"


def _find_bin() -> Path | None:
    if (PG_BIN / "initdb").is_file():
        return PG_BIN
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").is_file():
            return root
    return None


class PostgresServer:
    """initdb, start, `url(dbname)`, `create_database()`, stop."""

    def __init__(self, settings: tuple[str, ...] = ()) -> None:
        """`settings`: more `-c name=value` server settings (benchmarks tune memory)."""
        bin_dir = _find_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql; "
                               "./hcp test installs it)")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="hcp-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses={HOST} "
                        "-c fsync=on -c max_connections=50 -c shared_buffers=32MB"
                        + "".join(f" -c {s}" for s in settings),
                  "-w", "-t", "60", "start")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}\n{result.stderr}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
