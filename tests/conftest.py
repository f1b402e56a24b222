"""Fixtures shared by the whole suite: a private mosquitto, a test CA, the reference
platform. Each test gets its own broker and platform on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.mosquitto import Mosquitto, TestCA
from tests.support.platform import RunningPlatform, running_platform

# No property test is a timing test: hypothesis's default 200 ms deadline per example (and
# its too_slow health check) fails examples that merely ran while the 2-core machine was
# busy with the rest of the suite. Speed is judged by the benchmarks in bench/.
settings.register_profile("hcp", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hcp")


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A throw-away CA; `test_ca.issue(name)` -> (cert, key) for localhost/127.0.0.1."""
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start brokers with options: mosquitto_factory(tls=test_ca, users={...}, acl=...)."""
    brokers: list[Mosquitto] = []

    def start(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(brokers) + 1}", **options)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.__exit__(None, None, None)


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A plain broker (anonymous, no TLS) on a free port: `.host`, `.port`."""
    return mosquitto_factory()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    """The reference platform in this process: `.url`, `.control.counts()`, chaos."""
    with running_platform(tmp_path / "platform") as p:
        yield p
