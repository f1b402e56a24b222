"""Platform workers: each takes a batch and does not give it back until the platform
has answered for every rating in it (or the bridge is stopping).

Retry policy (SPEC §9): 5xx, 408, 429, timeouts, connection errors and garbled answers
→ exponential backoff with full jitter from 0.2 s, capped at 60 s (`retry_cap_s`), at
least the platform's Retry-After, indefinitely. A batch refused as a whole with another 4xx is a
configuration problem (bad token, wrong URL): logged loudly, reported as trouble (an
alert), retried every `client_error_retry_s` — never turned into rejections.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker_bridge.metrics import BridgeMetrics
from broker_bridge.platform_client import PlatformClient, PlatformError, Result
from common.backoff import CAP_S, full_jitter
from common.rating import RatingMessage

log = logging.getLogger("hcp.bridge.platform")

# While the platform keeps failing, say so at most this often (the metrics count all).
QUIET_LOG_S = 30.0


@dataclass(frozen=True, slots=True)
class Batch:
    number: int
    ratings: list[RatingMessage]


@dataclass(frozen=True, slots=True)
class BatchAnswered:
    batch: Batch
    results: dict[str, Result]


@dataclass(frozen=True, slots=True)
class BatchAbandoned:
    """The bridge is stopping before the platform answered: nothing is acknowledged."""

    batch: Batch


@dataclass(frozen=True, slots=True)
class PlatformRefuses:
    """A whole batch refused with a non-retryable status: alert the operators."""

    status: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """Delivering the batch raised something no retry rule covers (a bug, or a record the
    client cannot handle): the owner decides, the worker carries on."""

    batch: Batch
    detail: str


WorkerEvent = BatchAnswered | BatchAbandoned | PlatformRefuses | BatchFailed


class PlatformWorker(threading.Thread):
    """One thread, one kept-alive platform connection, one batch at a time."""

    def __init__(self, name: str, client: PlatformClient, jobs: queue.SimpleQueue[Batch | None],
                 sink: Callable[[WorkerEvent], None], metrics: BridgeMetrics,
                 stopping: threading.Event, client_error_retry_s: float,
                 retry_cap_s: float = CAP_S) -> None:
        super().__init__(name=name, daemon=True)
        self._client = client
        self._jobs = jobs
        self._sink = sink
        self._metrics = metrics
        self._stopping = stopping
        self._client_error_retry_s = client_error_retry_s
        self._retry_cap_s = retry_cap_s

    def run(self) -> None:
        try:
            while True:
                batch = self._jobs.get()
                if batch is None:
                    return
                try:
                    results = self._deliver(batch)
                except BaseException as e:  # noqa: BLE001 - SystemExit too: in a thread
                    # it would only end this worker, and the batch would come back after
                    # the restart to end it again. Contained here, at the loop: a worker
                    # that died would stop its share of forwarding.
                    detail = describe_failure(e)
                    log.error("platform worker %s: delivering a batch of %d ratings failed "
                              "unexpectedly (%s); handing it back", self.name,
                              len(batch.ratings), detail)
                    log.debug("the failure in full", exc_info=True)
                    self._metrics.internal_errors.labels("worker").inc()
                    self._client.close()  # whatever state the connection was left in
                    self._sink(BatchFailed(batch, detail))
                    continue
                self._sink(BatchAnswered(batch, results) if results is not None
                           else BatchAbandoned(batch))
        finally:
            self._client.close()

    def _deliver(self, batch: Batch) -> dict[str, Result] | None:
        """Post until every rating of `batch` has an answer; None if stopping first."""
        results: dict[str, Result] = {}
        # Usually one chunk: the batch. A platform that answers 413 gets halves.
        chunks: list[list[RatingMessage]] = [batch.ratings]
        attempt = retries = 0
        started = time.monotonic()
        last_log = 0.0
        while chunks:
            if self._stopping.is_set():
                return None
            todo = chunks[0]
            t0 = time.monotonic()
            try:
                answered = self._client.post_ratings([r.payload for r in todo])
            except PlatformError as e:
                self._metrics.request_seconds.observe(time.monotonic() - t0)
                self._metrics.retries.inc()
                retries += 1
                if e.status == 413 and len(todo) > 1:
                    log.warning("platform refuses %d ratings in one request (413); sending "
                                "halves — lower [platform] batch_max", len(todo))
                    chunks[0:1] = [todo[:len(todo) // 2], todo[len(todo) // 2:]]
                    continue
                delay = self._delay_after(e, attempt)
                now = time.monotonic()
                if not e.retryable:
                    log.error("platform REFUSED a batch of %d ratings: %s — check [platform] "
                              "url and token_file; nothing is lost, retrying in %.0f s",
                              len(todo), e.detail, delay)
                    self._metrics.client_errors.labels(str(e.status or "none")).inc()
                    self._sink(PlatformRefuses(e.status, e.detail))
                elif attempt == 0 or now - last_log >= QUIET_LOG_S:
                    log.warning("platform failed (%s) for a batch of %d ratings; retry %d "
                                "in %.1f s (failing for %.0f s)", e.detail, len(todo),
                                attempt + 1, delay, now - started)
                    last_log = now
                attempt += 1
                if self._stopping.wait(delay):
                    return None
                continue
            self._metrics.request_seconds.observe(time.monotonic() - t0)
            results.update(answered)
            missing = [r for r in todo if r.rating_id not in results]
            if missing:
                # An answer that skips some ratings is a platform bug: retry those only.
                log.warning("platform answered without a result for %d of %d ratings; "
                            "retrying those", len(missing), len(todo))
                chunks[0] = missing
                self._metrics.retries.inc()
                retries += 1
                attempt += 1
                if self._stopping.wait(full_jitter(attempt - 1, cap=self._retry_cap_s)):
                    return None
                continue
            chunks.pop(0)
            attempt = 0
        if retries:
            log.info("platform answered after %d retries (%.1f s)", retries,
                     time.monotonic() - started)
        return results

    def _delay_after(self, error: PlatformError, attempt: int) -> float:
        if not error.retryable:
            return self._client_error_retry_s
        delay = full_jitter(attempt, cap=self._retry_cap_s)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


def describe_failure(error: BaseException) -> str:
    """An unexpected exception for a log line or a dead letter: its type and where it
    was raised, not its message (which may quote a record's values)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__name__
    last = frames[-1]
    return f"{type(error).__name__} at {Path(last.filename).name}:{last.lineno}"
