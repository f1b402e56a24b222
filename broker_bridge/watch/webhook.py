"""Alerts to an HTTP webhook as well as MQTT: one POST per alert message, from its own
thread so a slow or dead webhook never delays the watcher. Best effort: a few retries,
then the message is dropped with a log line (MQTT carries every alert regardless)."""

from __future__ import annotations

import http.client
import logging
import queue
import threading
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("hcp.watch.webhook")

QUEUE_MAX = 1000
RETRY_DELAYS_S = (1.0, 4.0, 15.0)


class Webhook(threading.Thread):
    def __init__(self, url: str, timeout_s: float, token_file: str = "") -> None:
        super().__init__(name="webhook", daemon=True)
        self.url = url
        self._timeout = timeout_s
        self._token_file = token_file
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_MAX)
        self._stopping = threading.Event()
        self.delivered = 0
        self.dropped = 0

    def send(self, payload: bytes) -> None:
        """Queue one alert message (never blocks; drops it when the queue is full)."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.dropped += 1
            log.error("webhook queue full (%d): an alert was not posted to %s", QUEUE_MAX,
                      self.url)

    def stop(self, timeout: float = 1.0) -> None:
        """Give queued messages `timeout` seconds, then stop (retries are abandoned)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self.join(timeout)
        self._stopping.set()
        self.join(0.5)

    def run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self._deliver(payload)
            except Exception as e:
                # Contained at the loop: a dead webhook thread would drop every later
                # alert while the watcher looked healthy.
                self.dropped += 1
                log.error("webhook %s: an alert could not be sent (%s: unexpected)",
                          self.url, type(e).__name__)
                log.debug("the failure in full", exc_info=True)

    def _deliver(self, payload: bytes) -> None:
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            if delay and self._stopping.wait(delay):
                break
            error = self._post(payload)
            if error is None:
                self.delivered += 1
                return
            if attempt == 0:
                log.warning("webhook %s: %s; retrying", self.url, error)
        self.dropped += 1
        log.error("webhook %s: giving up on an alert after %d attempts", self.url,
                  len(RETRY_DELAYS_S) + 1)

    def _post(self, payload: bytes) -> str | None:
        request = urllib.request.Request(self.url, data=payload, method="POST")
        request.add_header("Content-Type", "application/json")
        if self._token_file:
            try:
                token = Path(self._token_file).read_text(encoding="utf-8").strip()
            except OSError as e:
                return f"cannot read webhook_token_file: {e.strerror}"
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read(64 * 1024)
                return None
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException) as e:
            # HTTPException: a garbled answer (bad status line, a header too long).
            return str(getattr(e, "reason", e))[:200]
