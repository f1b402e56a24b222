"""The bridge against a broker a team brings (EMQX, a managed service…): set
HCP_TEST_BROKER_URL=mqtt://host:port[?protocol=3.1.1&shared_group=NAME] and this runs
200 ratings through the real bridge to the reference platform, each expected there once.
Skipped, saying so, when the variable is unset. Topics use a prefix of their own
(hcp-test-<pid>/v1), so a broker shared with others is fine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.bridge import BridgeProcess
from tests.support.brokers import assert_exactly_once, publish_ratings, publisher, wait_for
from tests.support.platform import RunningPlatform

BROKER_URL = os.environ.get("HCP_TEST_BROKER_URL", "")


@pytest.mark.skipif(not BROKER_URL, reason="HCP_TEST_BROKER_URL is not set (e.g. "
                    "mqtt://emqx.example:1883?protocol=5 to run against your own broker)")
def test_a_broker_of_your_own_delivers_every_rating_once(
        tmp_path: Path, platform: RunningPlatform) -> None:
    """Against the broker at HCP_TEST_BROKER_URL (`mqtt://host:port`, optional
    `?protocol=3.1.1` and `&shared_group=bridge`): 200 ratings through the bridge, each
    at the platform once with its receipt. Use a broker nobody else publishes hcp/v1 to."""
    url = urlsplit(BROKER_URL)
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    protocol = query.get("protocol", "5")
    group = query.get("shared_group", "" if protocol == "3.1.1" else "bridge")

    class Remote:
        host = url.hostname or "127.0.0.1"
        port = url.port or 1883

    prefix = f"hcp-test-{os.getpid()}/v1"
    bridge = BridgeProcess(tmp_path / "bridge", cast(Any, Remote()), platform.url,
                           client_id=f"hcp-test-bridge-{os.getpid()}",
                           overrides={"mqtt": {"protocol": protocol, "shared_group": group,
                                               "prefix": prefix}})
    with bridge.start(timeout=30), publisher(Remote(), protocol, prefix) as fleet:
        sent = publish_ratings(fleet, 200)
        wait_for(lambda: platform.control.counts()["total"] >= 200, 60, "200 at the platform")
    assert_exactly_once(platform, sent)
