"""A private mosquitto broker on a free loopback port, plus a throw-away test CA.

The demo, the chaos runner, the benchmarks and every MQTT test start their own broker
with its own config (never the system one on 1883) and can stop, SIGKILL, freeze
(SIGSTOP) and restart it on the same port, so outage behaviour is exercised against the
real thing. Typical use in tests, via the fixtures in tests/conftest.py:

    def test_something(mosquitto):            # plain listener, anonymous access
        client.connect(mosquitto.host, mosquitto.port)

    def test_tls(mosquitto_factory, test_ca):  # TLS + passwords + ACL
        broker = mosquitto_factory(tls=test_ca, users={"dev": "pw"}, acl=ACL_TEXT)
        client.tls_set(ca_certs=str(test_ca.ca_file))
        client.connect(broker.host, broker.tls_port)

With `users`, anonymous access is off on every listener; `acl` is the text of a
mosquitto acl_file (`user NAME` / `topic readwrite hcp/v1/#` / `pattern …`).
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from simulator.children import die_with_parent

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """The broker did not start or stop as asked; the message ends with its log."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on right now.

    Chosen below the kernel's ephemeral range: a port from that range (what binding to
    port 0 gives) can be taken by any outgoing connection's local end before the server
    that wanted it starts listening — a classic source of "Address already in use"
    when many brokers, bridges and clients start side by side."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        found: int = s.getsockname()[1]
        return found


def wait_for_port(host: str, port: int, timeout: float = 5.0) -> bool:
    """True as soon as `host:port` accepts a TCP connection, False after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class TestCA:
    """A throw-away certificate authority made with the openssl CLI.

    `issue(name)` makes a key and a certificate signed by this CA, valid for
    localhost and 127.0.0.1 (usable as a server or a client certificate).
    """

    __test__ = False  # not a pytest test class despite its name

    directory: Path

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.ca_file.exists():
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", str(self.ca_key), "-out", str(self.ca_file),
                     "-days", "3", "-subj", "/CN=hcp test CA")

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def issue(self, name: str) -> tuple[Path, Path]:
        """Return (certificate, key) for `name`, creating them on first use."""
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        if cert.exists() and key.exists():
            return cert, key
        csr, ext = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_file),
                 "-CAkey", str(self.ca_key), "-CAcreateserial", "-out", str(cert),
                 "-days", "3", "-extfile", str(ext))
        return cert, key


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


@dataclass
class Mosquitto:
    """One mosquitto process with its config, persistence and log under `workdir`.

    `port` is the plain listener (always there); `tls_port` is set when `tls` is given.
    `max_queued_messages` is set deliberately high: mosquitto's default (1000 per
    client) silently drops messages for a slow persistent subscriber, which would make
    delivery tests fail for the broker's reasons, not ours. `autosave_interval` is short
    so a SIGKILLed broker keeps (almost) everything, like our sample production config.
    """

    workdir: Path
    tls: TestCA | None = None
    require_certificate: bool = False
    users: dict[str, str] | None = None
    acl: str | None = None
    max_queued_messages: int = 100_000
    autosave_interval: int = 1
    extra_conf: Sequence[str] = ()
    host: str = HOST
    port: int = 0
    tls_port: int | None = None
    # The kernel stops the broker when the thread that started it dies, however it dies
    # (the demo killed, its terminal closed). Off by default: a test or chaos fault may
    # restart a broker from a worker thread that ends long before the broker should.
    die_with_parent: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # Paths --------------------------------------------------------------------

    @property
    def conf_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def persistence_dir(self) -> Path:
        return self.workdir / "persistence"

    @property
    def password_file(self) -> Path:
        return self.workdir / "passwords"

    @property
    def acl_file(self) -> Path:
        return self.workdir / "acl"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything mosquitto logged so far (handy in assertion messages)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> Mosquitto:
        """Write the config and start mosquitto; return once its listeners accept."""
        if self.running:
            raise BrokerError("mosquitto is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if self.tls is not None and not self.tls_port:
            self.tls_port = free_port(self.host)
        self._write_files()
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent if self.die_with_parent else None)
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        deadline = time.monotonic() + 10
        for port in ports:
            if not wait_for_port(self.host, port, max(0.1, deadline - time.monotonic())):
                self.kill()
                raise BrokerError(f"mosquitto did not listen on {self.host}:{port}\n"
                                  + self.log_text()[-2000:])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: a clean shutdown (mosquitto saves its persistence file)."""
        if not self.running:
            return
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BrokerError("mosquitto ignored SIGTERM for "
                              f"{timeout} s\n" + self.log_text()[-2000:]) from None

    def kill(self) -> None:
        """SIGKILL: a crash; only what the last autosave wrote survives."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (a hung broker)."""
        assert self._process is not None and self.running
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self._process is not None and self.running
        self._process.send_signal(signal.SIGCONT)

    def restart(self, wipe_persistence: bool = False) -> Mosquitto:
        """Stop (if running) and start again on the same ports.

        With `wipe_persistence` the broker comes back with no sessions and no retained
        messages: the worst case after a broker disk loss.
        """
        self.stop()
        if wipe_persistence:
            shutil.rmtree(self.persistence_dir, ignore_errors=True)
        return self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    # Config -------------------------------------------------------------------

    def _write_files(self) -> None:
        lines = [
            "# written by simulator/localbroker.py",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, do not drop to 'mosquitto'
            "per_listener_settings false",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
        ]
        if self.users:
            self._write_passwords(self.users)
            lines.append(f"password_file {self.password_file}")
        if self.acl is not None:
            self.acl_file.write_text(self.acl)
            lines.append(f"acl_file {self.acl_file}")
        lines += [f"listener {self.port} {self.host}"]
        if self.tls is not None:
            cert, key = self.tls.issue("mosquitto")
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.ca_file}",
                f"certfile {cert}",
                f"keyfile {key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        lines += list(self.extra_conf)
        self.conf_file.write_text("\n".join(lines) + "\n")

    def _write_passwords(self, users: dict[str, str]) -> None:
        self.password_file.unlink(missing_ok=True)
        self.password_file.touch(mode=0o600)
        for name, password in users.items():
            done = subprocess.run([MOSQUITTO_PASSWD, "-b", str(self.password_file), name, password],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BrokerError(f"mosquitto_passwd failed for {name!r}: {done.stderr.strip()}")
