"""The sample broker's service users, against a real mosquitto running
systemd/examples/mosquitto.conf and mosquitto.acl (tests/test_acl.py's SampleBroker),
with the devices and the services kept apart as the sample has them: the devices in
the dynamic-security plugin on the TLS listener, the services in their password file on
the loopback one.

- A device's login is refused on the loopback listener: the services' own.
- The watcher has a user of its own: it reads every device and writes alerts only.
- Both listeners make the user name the client id, and every service user of the ACL
  is a block of its own that starts by denying the device topics under its name, and
  is created by docs/install.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import TestCA
from tests.test_acl import PASSWORDS, SERVICES_FILE, A, B, Client, SampleBroker, marker

SERVICES = {"hcp-bridge-1": PASSWORDS["hcp-bridge-1"], "hcp-watch": "pw-watch-5Tn",
            "hcp-monitor": PASSWORDS["hcp-monitor"]}
REPO = Path(__file__).resolve().parents[1]
ADMIN = "hcp-admin"  # the plugin's, on the TLS listener: not in the services' file


def acl_blocks() -> dict[str, list[str]]:
    """The sample ACL's `user` blocks: name -> its lines, comments left out."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (REPO / "systemd/examples/mosquitto.acl").read_text().splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line.split()[1], [])
        elif line.startswith("pattern "):
            current = None
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return blocks


def service_users() -> list[str]:
    return sorted(set(acl_blocks()) - {ADMIN})


class SplitPasswordBroker(SampleBroker):
    """SampleBroker with the watcher among the services."""

    def __init__(self, workdir: Path, ca: TestCA) -> None:
        super().__init__(workdir, ca, services=dict(SERVICES))


@pytest.fixture
def split_broker(tmp_path: Path, test_ca: TestCA) -> Iterator[SplitPasswordBroker]:
    sample = SplitPasswordBroker(tmp_path / "sample-broker", test_ca)
    sample.start()
    yield sample
    sample.stop()


@pytest.fixture
def connect(split_broker: SplitPasswordBroker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def _connect(user: str, *, device_listener: bool = True, client_id: str = "",
                 password: str | None = None) -> Client:
        client = Client(split_broker, user, password=password, client_id=client_id,
                        device_listener=device_listener)
        made.append(client)
        return client

    yield _connect
    for client in made:
        client.close()


def test_the_sample_keeps_a_services_password_file_on_loopback() -> None:
    conf = (Path(__file__).resolve().parents[1] / "systemd/examples/mosquitto.conf").read_text()
    listeners = conf.split("\nlistener ")[1:]
    files = {block.split()[0]: [line.split()[1] for line in block.splitlines()
                                if line.startswith(("password_file ", "plugin "))]
             for block in listeners}
    assert files == {"8883": ["/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"],
                     "1883": [SERVICES_FILE]}


def test_both_listeners_make_the_user_name_the_client_id() -> None:
    conf = (REPO / "systemd/examples/mosquitto.conf").read_text()
    for block in conf.split("\nlistener ")[1:]:
        assert "\nuse_username_as_clientid true\n" in block, block.split()[0]


def test_every_service_user_denies_device_topics_under_its_name() -> None:
    """The `pattern` lines apply to every user: a block without the deny line lets that
    service publish ratings and statuses as a fake device named after it."""
    blocks = acl_blocks()
    assert {"hcp-bridge-1", "hcp-bridge-1-expired", "hcp-bridge-2", "hcp-watch",
            "hcp-platform", "hcp-forget"} <= set(blocks)
    for user, lines in blocks.items():
        assert lines[0] == f"topic deny hcp/v1/{user}/#", user
        assert not any("%" in line for line in lines), user


def test_install_doc_creates_every_service_user() -> None:
    """docs/install.md's password file for the loopback listener names each of them."""
    doc = (REPO / "docs/install.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", doc, re.S)
    users = [b for b in blocks if "services.plain" in b and "mosquitto_passwd" in b]
    assert len(users) == 1, "no single users block in docs/install.md"
    named = set(re.findall(r"hcp-[a-z0-9-]+", users[0]))
    assert set(service_users()) <= named, set(service_users()) - named


def test_a_device_login_is_refused_on_loopback(connect: Callable[..., Client]) -> None:
    """With one password file for both listeners, A logged in on loopback with B's
    client id and took B's session there."""
    rc = connect(A, device_listener=False, client_id=B).connect()
    assert rc is not None and rc.is_failure, rc
    # The same login over TLS is fine.
    connect(A, client_id=A).connected()


def test_the_watcher_reads_devices_and_writes_only_alerts(
        connect: Callable[..., Client]) -> None:
    watch = connect("hcp-watch", device_listener=False, client_id="hcp-watch-1",
                    password=SERVICES["hcp-watch"]).connected()
    for kind in ("rating", "event", "status", "telemetry"):
        assert not watch.subscribe(f"hcp/v1/+/{kind}").is_failure
    a = connect(A, client_id=A).connected()
    sent = marker()
    a.publish(f"hcp/v1/{A}/rating", sent)
    assert watch.next_message() == (f"hcp/v1/{A}/rating", sent)

    monitor = connect("hcp-monitor", device_listener=False).connected()
    monitor.subscribe("hcp/v1/#")
    assert not watch.publish("hcp/v1/alerts", {"alert": "test"}).is_failure
    assert watch.publish(f"hcp/v1/{A}/receipt", {"receipts": []}).is_failure
    assert watch.publish(f"hcp/v1/{A}/config", {}).is_failure
    assert monitor.next_message() == ("hcp/v1/alerts", {"alert": "test"})
