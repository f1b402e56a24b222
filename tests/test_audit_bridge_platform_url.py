"""Audit: a [platform] url the config accepted but no request can carry. A non-ASCII path
made http.client raise UnicodeEncodeError in the platform worker, so every batch
"failed unexpectedly" and every rating was set aside as unprocessable (dead letter,
acknowledged); a space made every request fail for ever as "cannot reach"; a host label
over 63 characters raised UnicodeError from the resolver. Now the config refuses them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.config import parse_bridge_config
from broker_bridge.platform_client import PlatformClient, PlatformError
from common.configschema import ConfigError

BAD_URLS = [
    "http://127.0.0.1:{port}/api/评价",
    "http://127.0.0.1:{port}/a b",
    "http://127.0.0.1:{port}/api?x=\x7f",
    "http://127.0.0.1:{port}/api\t",
    "http://" + "a" * 64 + ".example/api",
    "http://a..b/api",
    "http://h[.example/api",
    "http://[::1/api",
]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(50)
    yield sock.getsockname()[1]
    sock.close()


def config_for(url: str) -> object:
    return parse_bridge_config(Path("test.toml"), {"mqtt": {"client_id": "audit-url"},
                                                  "platform": {"url": url}})


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_no_request_can_carry_is_a_config_problem(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_for(url.format(port=8080))
    assert any("[platform] url" in p for p in caught.value.problems), caught.value.problems


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8"), max_size=12), st.text(max_size=12))
def test_any_accepted_url_makes_a_request_or_a_platform_error(silent_port: int,
                                                             host_tail: str, path: str
                                                             ) -> None:
    """A URL the config accepts never makes the client raise anything but PlatformError
    (which the worker turns into a retry or a refused batch)."""
    for url in (f"http://127.0.0.1:{silent_port}/{path}",
                f"http://h{host_tail}.invalid:{silent_port}/x"):
        try:
            config_for(url)
        except ConfigError:
            continue
        client = PlatformClient(url, 0.05)
        try:
            client.post_ratings([b"{}"])
        except PlatformError:
            pass
        finally:
            client.close()
