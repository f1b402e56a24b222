"""Store-and-forward to the province (SPEC §11 `[upstream]`): every record the platform
stored is queued in the same transaction (table `upstream`), posted from the store in
batches with the bridge's platform client and field profile, and the province's answer
per record is kept. §9's retry rules: 5xx, 408, 429 (Retry-After honoured), timeouts and
connection errors are retried with exponential backoff and full jitter from 0.2 s up to
`retry_cap_s`, indefinitely; a batch refused with another 4xx is a configuration problem,
logged loudly and retried every `client_error_retry_s`. Nothing leaves the queue without
an answer, so days of provincial downtime lose nothing; a restart resumes from the store.

With `profile = "gov"` every record goes up in the gov table with the config's
`[upstream_profile]` overrides (city_platform/upstream_profile.py): ours mapped by the
bridge's profile, those that came in gov names re-mapped to the same names and values.

A record is queued once per (rating_id, device_id). The province answers by id (SPEC §9),
so, like the bridge, a request never holds two records with the same id: the second
device's record waits for the next request (docs/platform.md "Upstream").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from broker_bridge.platform_client import PlatformClient, PlatformError
from broker_bridge.profile import encode
from city_platform.store import Store, StoreError
from city_platform.upstream_profile import GovRecords, gov_profile
from common.backoff import full_jitter

log = logging.getLogger("hcp.platform.upstream")

IDLE_POLL_S = 5.0
QUIET_LOG_S = 30.0


class Upstream:
    def __init__(self, store: Store, settings: dict[str, Any]) -> None:
        self.store = store
        self.batch_max = int(settings.get("batch_max", 100))
        self.retry_cap_s = float(settings.get("retry_cap_s", 60.0))
        self.client_error_retry_s = float(settings.get("client_error_retry_s", 300.0))
        timeout = float(settings.get("timeout_s", 10.0))
        url = str(settings["url"])
        token, ca = str(settings.get("token_file", "")), str(settings.get("ca_file", ""))
        gov = settings.get("profile", "gov") == "gov"
        # [upstream_profile] as the config resolved it (the default table without one).
        overrides = {"fields": {}, "values": {}, "constants": {}, "timezone": store.timezone,
                     **settings.get("profile_overrides", {})}
        # Our records go out through the profile; records that came in already in the
        # gov names are re-mapped to the same overrides (generic: as they came).
        self._ours = PlatformClient(url, timeout, token, ca,
                                    gov_profile(overrides) if gov else None)
        self._gov_records = GovRecords(overrides, store.tz) if gov else None
        self._as_is = PlatformClient(url, timeout, token, ca, None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._batches_answered = 0
        self.url = url

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._ours.close()
        self._as_is.close()

    def _run(self) -> None:
        """Forward until stopped. A failure nobody foresaw (a bug, a record the profile
        cannot map) is logged with its traceback and forwarding resumes after a backoff:
        it must not end the thread and leave the province without records, unseen."""
        failures, answered_before = 0, -1
        while not self._stop.is_set():
            try:
                self._forward()
                return
            except Exception:
                # In a row: reset once a batch has been answered since the last one.
                failures = 1 if self._batches_answered != answered_before else failures + 1
                answered_before = self._batches_answered
                delay = full_jitter(min(failures, 10), cap=self.retry_cap_s)
                log.exception("forwarding to the province failed unexpectedly (%d in a row); "
                              "nothing is lost, resuming in %.1f s", failures, delay)
                self._stop.wait(delay)

    def _forward(self) -> None:
        attempt = 0
        last_log = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                pending = self.store.pending_upstream(self.batch_max)
            except StoreError as e:
                log.warning("reading the upstream queue: %s", e)
                self._stop.wait(IDLE_POLL_S)
                continue
            if not pending:
                self._wake.wait(IDLE_POLL_S)
                continue
            batch = one_per_id(pending)
            answered, failure = self._post(batch)
            if (answered or failure is None) and not self._keep(answered):
                continue
            if failure is not None:
                left = len(batch) - len(answered)
                if failure.retryable:
                    delay = full_jitter(attempt, cap=self.retry_cap_s)
                    if failure.retry_after is not None:
                        delay = max(delay, failure.retry_after)
                    now = time.monotonic()
                    if attempt == 0 or now - last_log >= QUIET_LOG_S:
                        log.warning("province failed (%s) for %d records; retry %d in %.1f s",
                                    failure.detail, left, attempt + 1, delay)
                        last_log = now
                else:
                    delay = self.client_error_retry_s
                    log.error("province REFUSED a batch of %d records: %s — check [upstream] "
                              "url and token_file; nothing is lost, retrying in %.0f s",
                              left, failure.detail, delay)
                attempt += 1
                self._stop.wait(delay)
                continue
            if attempt:
                log.info("province answered again after %d retries", attempt)
            attempt = 0
            if len(answered) < len(batch):
                # An answer that skips records: those stay queued and go again.
                log.warning("province answered %d of %d records", len(answered), len(batch))
                self._stop.wait(full_jitter(0, cap=self.retry_cap_s))

    def _keep(self, answered: list[tuple[str, str, str, str | None]]) -> bool:
        """Keep the province's answers; False (after a pause) when the store failed:
        those records stay queued and are posted again."""
        self._batches_answered += 1
        try:
            self.store.record_upstream(answered)
        except StoreError as e:
            log.warning("keeping the province's answers: %s (they will be asked again)", e)
            self._stop.wait(1.0)
            return False
        rejected = [a for a in answered if a[2] == "rejected"]
        for rating_id, device_id, _, error in rejected[:5]:
            log.error("province rejected %s of %s: %s", rating_id, device_id, error)
        return True

    def _post(self, pending: list[tuple[str, str, bool, str]]
              ) -> tuple[list[tuple[str, str, str, str | None]], PlatformError | None]:
        """Post the batch: ours through the profile, then those that came in the gov
        names as they are. The answers the province gave, and the failure that stopped
        the rest: a part answered is kept even when the next one fails, so that it is
        not posted again with the retry."""
        answers: list[tuple[str, str, str, str | None]] = []
        for client, gov in ((self._ours, False), (self._as_is, True)):
            part = [(rid, device, record) for rid, device, is_gov, record in pending
                    if is_gov == gov]
            if not part:
                continue
            try:
                results = client.post_ratings([self._payload(record, gov)
                                               for _, _, record in part])
            except PlatformError as e:
                return answers, e
            answers += [(rid, device, results[rid].status, results[rid].error)
                        for rid, device, _ in part if rid in results]
        return answers, None


    def _payload(self, record: str, gov: bool) -> bytes:
        if gov and self._gov_records is not None:
            try:
                return encode(self._gov_records.record(json.loads(record)))
            except (ValueError, AttributeError):   # stored, so never: the province judges
                pass
        return record.encode("utf-8")


def one_per_id(pending: list[tuple[str, str, bool, str]]
               ) -> list[tuple[str, str, bool, str]]:
    """The pending records but those whose id is already in the batch: the province's
    answer names records by id alone, so two with one id in one request could not be
    told apart. Those left out stay queued and go in a later request."""
    batch: list[tuple[str, str, bool, str]] = []
    ids: set[str] = set()
    for item in pending:
        if item[0] in ids:
            continue
        ids.add(item[0])
        batch.append(item)
    return batch
