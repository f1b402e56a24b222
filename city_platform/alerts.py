"""Follow-up alerts on `{prefix}/alerts`: `followup_due` from one working day before a
deadline, `followup_overdue` once it has passed — each raised once per deadline (the
store remembers which was raised, so a restart does not raise it again) and sent again
with `resolved: true` once the follow-up has moved past that step. The payload has the
watcher's shape (docs/alerts.md), so whatever already reads alerts reads these."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from city_platform.followups import CLOSED, OVERDUE, alert_for, alert_key, current_deadline
from city_platform.store import Followup, Store

log = logging.getLogger("hcp.platform.alerts")

SOURCE = "hcp-platform"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_document(followup: Followup, kind: str, which: str, due: str, raised_at: datetime,
                   resolved_at: datetime | None = None, region_code: str = "") -> dict[str, Any]:
    """The watcher's alert fields; evidence says which follow-up and which deadline.
    No personal data: the case id is the business system's key."""
    now = resolved_at or raised_at
    return {
        "alert": kind,
        "kind": kind,
        # The device too: two devices' ratings may share a rating_id (issue 17).
        "alert_id": f"{kind}:{followup.device_id}:{followup.rating_id}:{which}",
        "resolved": resolved_at is not None,
        "severity": "critical" if kind == OVERDUE else "warning",
        "device_id": followup.device_id,
        "hall_id": followup.hall_id,
        "window_id": followup.window_id,
        "region_code": region_code,
        "evidence": {
            "rating_id": followup.rating_id, "case_id": followup.case_id,
            "spontaneous": followup.spontaneous, "level": followup.level,
            "state": followup.state, "deadline": which, "due": due,
            "complex": followup.complex,
        },
        "first_seen": _iso(raised_at),
        "raised_at": _iso(raised_at),
        "resolved_at": None if resolved_at is None else _iso(resolved_at),
        "at": _iso(now),
        "watcher": SOURCE,
    }


class FollowupAlerts:
    """Checks every active follow-up against today's date; `publish(topic, payload)`."""

    def __init__(self, store: Store, prefix: str,
                 publish: Callable[[str, bytes], None]) -> None:
        self.store = store
        self.topic = f"{prefix}/alerts"
        self.publish = publish

    def check(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Raise what is due now, resolve what the follow-up's progress settled; return
        the documents published (raises and resolves)."""
        now = now or datetime.now(UTC)
        today = now.astimezone(self.store.tz).date()
        self.store.refresh_deadlines()
        published = []
        for followup in self.store.followups(active=True) + self.store.followups_to_settle():
            raised = Raised.parse(followup.alerted)
            current = current_deadline(followup.state, followup.complex,
                                       followup.contact_due, followup.rectify_due,
                                       followup.complex_due)
            changed = False
            for entry in raised.open():
                # The deadline it warned about is no longer the one being worked towards:
                # the step was done (or the case marked complex): same alert_id, resolved.
                if current is None or (entry.which, entry.due) != (current[0],
                                                                    current[1].isoformat()):
                    document = alert_document(followup, entry.kind, entry.which, entry.due,
                                              entry.raised_at, resolved_at=now)
                    self._send(document)
                    entry.resolved = True
                    published.append(document)
                    changed = True
            hit = alert_for(followup.state, followup.complex, followup.contact_due,
                            followup.rectify_due, followup.complex_due, today,
                            self.store.calendar)
            if hit is not None and alert_key(*hit) not in raised.keys():
                kind, which, due = hit
                document = alert_document(followup, kind, which, due.isoformat(), now)
                self._send(document)
                raised.add(alert_key(*hit), now)
                published.append(document)
                changed = True
                log.info("%s: rating %s (%s-%s), %s due %s", kind, followup.rating_id,
                         followup.hall_id, followup.window_id, which, due)
            if changed or (followup.state == CLOSED and not raised.settled):
                self.store.mark_alerted(followup.rating_id, followup.device_id,
                                        raised.text(settled=followup.state == CLOSED))
        return published

    def _send(self, document: dict[str, Any]) -> None:
        self.publish(self.topic, json.dumps(document, ensure_ascii=False,
                                            separators=(",", ":")).encode("utf-8"))


@dataclass
class Entry:
    kind: str
    which: str
    due: str
    raised_at: datetime
    resolved: bool

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.which}:{self.due}"


@dataclass
class Raised:
    """What the store's `alerted` column remembers of one follow-up's alerts:
    `kind:which:due@raised_at` entries separated by `|`, `~` before a resolved one, and
    `#` in front once the follow-up is closed with nothing left to resolve (so closed
    follow-ups are not read again)."""

    entries: list[Entry]
    settled: bool = False

    @classmethod
    def parse(cls, text: str) -> Raised:
        settled = text.startswith("#")
        entries = []
        for part in text.lstrip("#").split("|"):
            if not part:
                continue
            resolved = part.startswith("~")
            key, _, at = part.lstrip("~").partition("@")
            kind, which, due = (key.split(":") + ["", "", ""])[:3]
            try:
                raised_at = datetime.fromisoformat(at)
            except ValueError:
                raised_at = datetime.now(UTC)
            entries.append(Entry(kind, which, due, raised_at, resolved))
        return cls(entries, settled)

    def keys(self) -> set[str]:
        return {e.key for e in self.entries}

    def open(self) -> list[Entry]:
        return [e for e in self.entries if not e.resolved]

    def add(self, key: str, at: datetime) -> None:
        kind, which, due = key.split(":")
        self.entries.append(Entry(kind, which, due, at, False))

    def text(self, settled: bool) -> str:
        body = "|".join(("~" if e.resolved else "") + f"{e.key}@{e.raised_at.isoformat()}"
                        for e in self.entries)
        return ("#" if settled and not self.open() else "") + body
