"""Follow-up alerts on `{prefix}/alerts`: `followup_due` from one working day before a
deadline, `followup_overdue` once it has passed — each raised once per deadline (the
store remembers which was raised, so a restart does not raise it again). The payload has
the watcher's shape (docs/alerts.md), so whatever already reads alerts reads these."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from city_platform.followups import OVERDUE, alert_for, alert_key
from city_platform.store import Followup, Store

log = logging.getLogger("hcp.platform.alerts")

SOURCE = "hcp-platform"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_document(followup: Followup, kind: str, which: str, due: str, now: datetime,
                   region_code: str = "") -> dict[str, Any]:
    """The watcher's alert fields; evidence says which follow-up and which deadline.
    No personal data: the case id is the business system's key."""
    return {
        "alert": kind,
        "kind": kind,
        "alert_id": f"{kind}:{followup.rating_id}:{which}",
        "resolved": False,
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
        "first_seen": _iso(now),
        "raised_at": _iso(now),
        "resolved_at": None,
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
        """Raise what is due now; return the documents published."""
        now = now or datetime.now(UTC)
        today = now.astimezone(self.store.tz).date()
        self.store.refresh_deadlines()
        raised = []
        for followup in self.store.followups(active=True):
            hit = alert_for(followup.state, followup.complex, followup.contact_due,
                            followup.rectify_due, followup.complex_due, today,
                            self.store.calendar)
            if hit is None:
                continue
            key = alert_key(*hit)
            if key == followup.alerted:
                continue
            kind, which, due = hit
            document = alert_document(followup, kind, which, due.isoformat(), now)
            self.publish(self.topic, json.dumps(document, ensure_ascii=False,
                                                separators=(",", ":")).encode("utf-8"))
            self.store.mark_alerted(followup.rating_id, key)
            log.info("%s: rating %s (%s-%s), %s due %s", kind, followup.rating_id,
                     followup.hall_id, followup.window_id, which, due)
            raised.append(document)
        return raised
