"""The paho adapter on its own: backoff with jitter, and a link that reports instead of
dying when its credentials cannot be read or the broker is not there."""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from device.config import MqttSection
from device.mqtt_link import Backoff, MqttLink, MqttPubAck, MqttUp
from tests.support.mosquitto import Mosquitto, free_port
from tests.test_device_mqtt_support import retained_status, wait_until

CFG = MqttSection(host="127.0.0.1", port=1, prefix="hcp/v1", keepalive_s=30,
                  resend_after_s=300, telemetry_s=60, protocol="5", session_expiry_s=600,
                  max_inflight=5, tls=False, ca_file="", client_cert="", client_key="",
                  username="", password_file="")


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    b = Backoff(first_s=0.5, cap_s=8)
    waits = [[b.next() for _ in range(8)] for b in (Backoff(0.5, 8) for _ in range(200))]
    assert all(0.25 <= w[0] <= 0.5 for w in waits)          # never an immediate retry
    for n in range(1, 8):
        ceiling = min(8, 0.5 * 2 ** n)
        column = [w[n] for w in waits]
        assert all(0 <= x <= ceiling for x in column)
        assert max(column) > ceiling * 0.7                    # it does grow …
        assert min(column) < ceiling * 0.3                    # … and it is spread out
    b.next()
    b.reset()
    assert 0.25 <= b.next() <= 0.5


def _link(cfg: MqttSection, events: queue.Queue[Any]) -> MqttLink:
    return MqttLink(cfg, "421100-HG01-W09", "9.9", events.put, time.monotonic)


def test_unreadable_password_file_is_reported_and_retried_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events: queue.Queue[Any] = queue.Queue()
    cfg = replace(CFG, port=free_port(), username="w09", password_file=str(tmp_path))  # a dir
    link = _link(cfg, events)
    with caplog.at_level(logging.WARNING, logger="hcp.mqtt"):
        link.start()
        deadline = time.monotonic() + 5
        while "cannot read [mqtt] password_file" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
        assert link._thread is not None and link._thread.is_alive()
        t0 = time.monotonic()
        link.stop()
        assert time.monotonic() - t0 < 1.5   # a stop during the backoff wait is prompt
    assert "ERROR" in caplog.text and events.empty()


def test_tickets_come_back_with_the_pubacks_and_stop_says_goodbye(
        mosquitto: Mosquitto) -> None:
    events: queue.Queue[Any] = queue.Queue()
    link = _link(replace(CFG, port=mosquitto.port), events)
    link.start()
    try:
        assert isinstance(events.get(timeout=5), MqttUp)
        for ticket in (11, 12, 13):
            link.publish("rating", {"n": ticket}, ticket=ticket)
        link.publish("telemetry", {"n": 0}, qos=0)        # no ticket, no answer expected
        acks = [events.get(timeout=5) for _ in range(3)]
        assert all(isinstance(a, MqttPubAck) and a.ok for a in acks)
        assert sorted(a.ticket for a in acks) == [11, 12, 13]
    finally:
        link.stop()
    # A clean DISCONNECT (mosquitto says "closed its connection" for a dropped socket),
    # so the will is not used: the goodbye status carries the version. (mosquitto may
    # write the line a moment after the link stopped, on a busy machine.)
    assert wait_until(lambda: "Client 421100-HG01-W09 disconnected." in mosquitto.log_text(),
                      5), mosquitto.log_text()
    assert "421100-HG01-W09 closed its connection" not in mosquitto.log_text()
    status = retained_status(mosquitto, "421100-HG01-W09")
    assert status is not None and status["online"] is False and status["version"] == "9.9"
