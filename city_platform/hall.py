"""The hall as the dashboard shows it: one row per window, from the store (today's
ratings and satisfaction, follow-ups due) and from the broker (online, backlog, open
alerts, window names, the clerk logged in), with a version number that moves at every
change so the page's event stream can wait on it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from city_platform.alerts import FollowupAlerts
from city_platform.broker import Broker, BrokerError
from city_platform.config import PlatformConfig
from city_platform.followups import OVERDUE, alert_for
from city_platform.store import Store, StoreError
from common.rating import STAFF_FIELDS, InvalidRecord, decode_json_object
from common.text import display_text, log_text

if TYPE_CHECKING:
    from city_platform.run import Platform

log = logging.getLogger("hcp.platform.hall")

MAX_DEVICE_MESSAGE = 64 * 1024   # as the bridge's fleet view: larger is not a device's


@dataclass
class WindowLive:
    """What the broker told about one device."""

    device_id: str
    online: bool | None = None
    backlog: int | None = None
    oldest_pending_s: float | None = None
    window_name: str | None = None
    # The clerk logged in, as the device's retained status says (docs/spec-proposals.md
    # P4); `reports_staff` is False for a device whose status has no `staff` key (older
    # than P4): then the page falls back to the staff of its latest rating today.
    clerk: str | None = None
    reports_staff: bool = False
    alerts: dict[str, str] = field(default_factory=dict)  # open alert_id -> kind
    last_event: str | None = None


def clerk_of(staff: Any) -> str | None:
    """The clerk as the page shows it, from a status's `staff`: the name, else 工号 and
    the staff_id, cut to the record's limits and made safe to show (common.text); None
    for null, for nobody, and for anything that is not an object of strings."""
    if not isinstance(staff, dict):
        return None
    name, staff_id = (_shown(staff.get(key), STAFF_FIELDS[key])
                      for key in ("staff_name", "staff_id"))
    return name or (f"工号 {staff_id}" if staff_id else None)


def _shown(value: Any, limit: int) -> str:
    return display_text(value[:limit]) if isinstance(value, str) else ""


def satisfaction(good: int, total: int) -> str | None:
    if not total:
        return None
    return str((Decimal(good) * 100 / Decimal(total)).quantize(Decimal("0.1"), ROUND_HALF_UP))


class Hall:
    def __init__(self, store: Store, config: PlatformConfig) -> None:
        self.store = store
        self.config = config
        self.live: dict[str, WindowLive] = {}
        self._cond = threading.Condition()
        self._version = 0
        self._broker: Broker | None = None
        self.alerts: FollowupAlerts | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Change notification ---------------------------------------------------------------

    def changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wait_change(self, seen: int, timeout: float) -> int:
        """Return at once when the version moved past `seen`, else after a change or
        `timeout` (a keep-alive for the stream)."""
        with self._cond:
            if self._version == seen:
                self._cond.wait(timeout)
            return self._version

    def wake_all(self) -> None:
        self.changed()

    # Broker ----------------------------------------------------------------------------

    def start(self, platform: Platform) -> None:
        mqtt = self.config.mqtt
        if mqtt.host:
            try:
                self._broker = Broker(mqtt, self.on_message)
            except BrokerError as e:
                log.error("%s: no live view and no follow-up alerts", e)
            else:
                self._broker.start()
                platform.parts.append(("broker", self._broker.stop))
                self.alerts = FollowupAlerts(self.store, mqtt.prefix, self._broker.publish)
        self._thread = threading.Thread(target=self._loop, name="hall", daemon=True)
        self._thread.start()
        platform.parts.append(("hall", self.stop))

    def stop(self) -> None:
        self._stop.set()
        self.changed()

    def _loop(self) -> None:
        """Follow-up deadlines: checked every [followups] check_s (and at start)."""
        while not self._stop.is_set():
            try:
                if self.alerts is not None and self.alerts.check():
                    self.changed()
                else:
                    self.store.refresh_deadlines()
            except StoreError as e:
                log.warning("follow-up check: %s", e)
            except Exception:
                # A failure nobody foresaw must not end the deadline checks for good.
                if self._stop.is_set():
                    return
                log.exception("follow-up check failed unexpectedly; trying again in %g s",
                              self.config.check_s)
            self._stop.wait(self.config.check_s)

    def on_message(self, device_id: str, kind: str, payload: bytes) -> None:
        if len(payload) > MAX_DEVICE_MESSAGE:
            log.warning("%s from %s ignored: %d bytes, at most %d", kind, log_text(device_id),
                        len(payload), MAX_DEVICE_MESSAGE)
            return
        try:
            data = decode_json_object(payload) if payload else {}
        except InvalidRecord:
            return
        if kind == "alerts":
            self._on_alert(data)
            return
        # Shown as one row of text (common.text), as the clerk is: a line break, an
        # escape sequence or a lone surrogate (valid JSON, not text: no answer of the
        # dashboard's API could be encoded again) never reaches the page or the report.
        name = _shown(data.get("window_name"), 40) if kind == "config" else ""
        with self._cond:
            window = self.live.setdefault(device_id, WindowLive(device_id))
            if kind == "status" and isinstance(data.get("online"), bool):
                window.online = data["online"]
                # A status without the key is an older device's: it says nothing of the
                # clerk. With the key, null or anything unreadable is nobody shown.
                window.reports_staff = "staff" in data
                window.clerk = clerk_of(data.get("staff"))
            elif kind == "telemetry":
                window.online = True if window.online is None else window.online
                if isinstance(data.get("backlog"), int):
                    window.backlog = data["backlog"]
                oldest = data.get("oldest_pending_s")
                window.oldest_pending_s = oldest if isinstance(oldest, int | float) else None
            elif kind == "event" and isinstance(data.get("event"), str):
                window.last_event = data["event"]
            elif kind == "config" and name:
                window.window_name = name
        if kind == "config" and name:
            self._keep_window_name(device_id, name)
        if kind == "event" and data.get("event") == "prompt_expired":
            # Outside the lock: a store write must not hold up the page's snapshots.
            try:
                self.store.add_expired_event(device_id, data)
            except (ValueError, StoreError) as e:
                log.warning("prompt_expired from %s not kept: %s", device_id, e)
        self.changed()

    def _keep_window_name(self, device_id: str, name: str) -> None:
        """For the report: the name under the device's hall and window (from its
        ratings; before its first one, from an id of the form region-hall-window)."""
        try:
            place = self.store.device_place(device_id)
            if place is None:
                parts = device_id.split("-")
                if len(parts) != 3:
                    return
                place = (parts[1], parts[2])
            self.store.note_window(place[0], place[1], device_id, name)
        except StoreError as e:
            log.warning("window name of %s not kept: %s", device_id, e)

    def _on_alert(self, data: dict[str, Any]) -> None:
        device_id, alert_id = data.get("device_id"), data.get("alert_id")
        if not isinstance(device_id, str) or not isinstance(alert_id, str):
            return
        if str(data.get("kind", "")).startswith("followup_"):
            return  # ours: the follow-up columns show them already
        with self._cond:
            window = self.live.setdefault(device_id, WindowLive(device_id))
            if data.get("resolved"):
                window.alerts.pop(alert_id, None)
            else:
                window.alerts[alert_id] = display_text(str(data.get("kind"))[:64]) or "?"
        self.changed()

    # What the page shows ---------------------------------------------------------------

    def snapshot(self, hall: str | None = None) -> dict[str, Any]:
        """Every window, or only those of `hall` (a hall screen shows its own)."""
        now = datetime.now(UTC)
        today = now.astimezone(self.store.tz).date()
        today_counts = self.store.today_by_device(today)
        devices = self.store.devices()
        names = self.store.window_names()
        staff = self.store.latest_staff(today)
        due: dict[str, list[int]] = {}
        for f in self.store.followups(active=True):
            counts = due.setdefault(f.device_id, [0, 0, 0])  # open, due soon, overdue
            counts[0] += 1
            hit = alert_for(f.state, f.complex, f.contact_due, f.rectify_due, f.complex_due,
                            today, self.store.calendar)
            if hit is not None:
                counts[2 if hit[0] == OVERDUE else 1] += 1
        with self._cond:
            live = {k: WindowLive(v.device_id, v.online, v.backlog, v.oldest_pending_s,
                                  v.window_name, v.clerk, v.reports_staff, dict(v.alerts),
                                  v.last_event)
                    for k, v in self.live.items()}
            version = self._version
        rows = []
        for device_id in sorted(set(devices) | set(live) | set(due)):
            hall_id, window_id = devices.get(device_id, ("", ""))
            if not hall_id:
                parts = device_id.split("-")
                hall_id, window_id = (parts[1], parts[2]) if len(parts) == 3 else ("?", device_id)
            if hall is not None and hall_id != hall:
                continue
            w = live.get(device_id, WindowLive(device_id))
            total, good = today_counts.get(device_id, (0, 0))
            followups = due.get(device_id, [0, 0, 0])
            clerk, clerk_source = _clerk(w, staff.get(device_id))
            rows.append({
                "device_id": device_id, "hall_id": hall_id, "window_id": window_id,
                "window_name": w.window_name or names.get((hall_id, window_id)) or window_id,
                "online": w.online, "backlog": w.backlog,
                "oldest_pending_s": w.oldest_pending_s,
                "today": total, "today_good": good,
                "satisfaction": satisfaction(good, total),
                "alerts": sorted(set(w.alerts.values())),
                "followups_open": followups[0], "followups_due": followups[1],
                "followups_overdue": followups[2],
                "clerk": clerk, "clerk_source": clerk_source,
            })
        return {"version": version, "at": now.isoformat(timespec="seconds"),
                "today": today.isoformat(), "timezone": self.store.timezone,
                "broker": self._broker is not None and self._broker.connected,
                "hall": hall,
                "windows": rows}

    def page(self) -> str:
        from city_platform.dashboard import PAGE

        return PAGE


def _clerk(w: WindowLive, latest_rating_staff: str | None) -> tuple[str | None, str | None]:
    """Who the page shows at the window, and from where: "login" (the device's status),
    "rating" (an older device that does not report logins: the staff of its latest rating
    today, a guess the page marks as such), or nobody. An offline device vouches for
    nobody."""
    if w.online is False:
        return None, None
    if w.reports_staff:
        return w.clerk, "login" if w.clerk else None
    if latest_rating_staff:
        return latest_rating_staff, "rating"
    return None, None
