"""The chaos run's ledger: every press the runner made, every `rated` frame a device sent
back, and what the platform holds at the end, reconciled into lost, duplicated and
phantom ratings.

Rules (docs/reliability.md):
- a rating confirmed by a `rated` frame must be at the platform exactly once;
- a case the device refused as `duplicate_case` after a restart (or after its `rated`
  frame was lost) was stored: it must be at the platform exactly once too;
- every rating at the platform must be a case rating of a case the runner sent to that
  device, with a level the runner pressed for that case, or pressed on that device with
  no case in mind (an impatient second press) before it arrived; anything else is a
  phantom;
- a case is rated at most once (two platform ratings for one case are a duplicate);
- a press whose outcome the runner never learnt may or may not be at the platform.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# What the runner knows about a case in the end.
OUTCOMES = ("rated", "stored", "expired", "cancelled", "unknown", "abandoned")


@dataclass
class Press:
    device: str
    case_id: str | None
    level: int
    at: float             # host wall clock just before the press went out


@dataclass
class Case:
    device: str
    case_id: str
    sent_at: float
    presses: list[Press] = field(default_factory=list)
    outcome: str | None = None        # one of OUTCOMES once known
    rating_ids: list[str] = field(default_factory=list)  # from `rated` frames
    storage_failures: int = 0


@dataclass
class PlatformRating:
    rating_id: str
    device_id: str
    level: int
    trigger: str
    case_id: str | None
    received_at: float    # host wall clock when the platform stored it
    times_seen: int


@dataclass
class Finding:
    kind: str             # lost | duplicated | phantom | mismatch
    detail: str


@dataclass
class Verdict:
    confirmed: int
    stored_unconfirmed: int
    delivered_unconfirmed: int
    at_platform: int
    copies_deduplicated: int
    findings: list[Finding]
    latencies_s: list[float]
    # device/case of each rating stored without its `rated` frame reaching the window
    stored_unconfirmed_cases: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    @property
    def ok(self) -> bool:
        return not self.findings


class Ledger:
    """Thread-safe: window workers, frame readers and the fault thread all write here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cases: dict[tuple[str, str], Case] = {}
        self.stray_presses: list[Press] = []
        # Presses with no particular case in mind (an impatient second press): they rate
        # whatever case is on screen when they land, if any.
        self.loose_presses: list[Press] = []
        self.rated_frames: dict[str, tuple[str, str, int]] = {}  # rating_id -> device, case, level
        self.anomalies: list[Finding] = []   # seen live, e.g. a `rated` nobody pressed for
        self.faults: Counter[str] = Counter()
        self.fault_log: list[tuple[float, str, str]] = []
        self.backlog_now: dict[str, int] = {}
        self.backlog_max: dict[str, int] = {}
        self.backlog_total_max = 0
        self.error_screens: Counter[str] = Counter()
        self.device_events: Counter[str] = Counter()
        self.started = time.monotonic()

    # Recording -----------------------------------------------------------------------

    def new_case(self, device: str, case_id: str) -> Case:
        case = Case(device, case_id, time.time())
        with self._lock:
            self.cases[(device, case_id)] = case
        return case

    def press(self, case: Case, level: int) -> None:
        with self._lock:
            case.presses.append(Press(case.device, case.case_id, level, time.time()))

    def loose_press(self, device: str, level: int) -> None:
        with self._lock:
            self.loose_presses.append(Press(device, None, level, time.time()))

    def stray_press(self, device: str, level: int) -> None:
        with self._lock:
            self.stray_presses.append(Press(device, None, level, time.time()))

    def rated(self, device: str, frame: dict[str, Any]) -> None:
        """A `rated` frame arrived (whoever is waiting for it)."""
        case_id, level, rating_id = frame.get("case_id"), frame.get("level"), frame.get("rating_id")
        with self._lock:
            if not isinstance(rating_id, str) or not isinstance(case_id, str):
                self.anomalies.append(Finding("phantom", f"{device}: malformed rated {frame}"))
                return
            case = self.cases.get((device, case_id))
            if case is None or not (any(p.level == level for p in case.presses) or any(
                    p.device == device and p.level == level for p in self.loose_presses)):
                self.anomalies.append(Finding(
                    "phantom", f"{device}: rated frame for case {case_id} level {level} "
                               "with no such press"))
            if rating_id in self.rated_frames:
                return  # the same frame seen twice cannot happen, but is harmless
            self.rated_frames[rating_id] = (device, case_id, level)  # type: ignore[assignment]
            if case is not None:
                case.rating_ids.append(rating_id)
                if len(set(case.rating_ids)) > 1:
                    self.anomalies.append(Finding(
                        "duplicated", f"{device}: case {case_id} rated twice "
                                      f"({', '.join(case.rating_ids)})"))

    def outcome(self, case: Case, outcome: str) -> None:
        assert outcome in OUTCOMES, outcome
        with self._lock:
            case.outcome = outcome

    def storage_failure(self, case: Case) -> None:
        with self._lock:
            case.storage_failures += 1
            self.error_screens[case.device] += 1

    def fault(self, kind: str, detail: str) -> None:
        with self._lock:
            self.faults[kind] += 1
            self.fault_log.append((round(time.monotonic() - self.started, 2), kind, detail))

    def backlog(self, device: str, n: int) -> None:
        with self._lock:
            self.backlog_now[device] = n
            self.backlog_max[device] = max(n, self.backlog_max.get(device, 0))
            self.backlog_total_max = max(self.backlog_total_max, sum(self.backlog_now.values()))

    def device_event(self, name: str) -> None:
        with self._lock:
            self.device_events[name] += 1

    # Questions -------------------------------------------------------------------------

    def must_arrive(self) -> dict[str, tuple[str, str, int]]:
        """rating_id -> (device, case, level) for every `rated` frame seen."""
        with self._lock:
            return dict(self.rated_frames)

    def stored_cases(self) -> list[Case]:
        """Cases known to be stored: a `rated` frame, or a `duplicate_case` answer."""
        with self._lock:
            return [c for c in self.cases.values() if c.outcome in ("rated", "stored")
                    or c.rating_ids]

    def outcomes(self) -> Counter[str]:
        with self._lock:
            return Counter(c.outcome or "in progress" for c in self.cases.values())

    def presses_total(self) -> int:
        with self._lock:
            return (sum(len(c.presses) for c in self.cases.values()) + len(self.stray_presses)
                    + len(self.loose_presses))

    # The reckoning ---------------------------------------------------------------------

    def reconcile(self, platform: list[PlatformRating]) -> Verdict:
        with self._lock:
            findings = list(self.anomalies)
            by_id = {r.rating_id: r for r in platform}
            by_case: dict[tuple[str, str], list[PlatformRating]] = defaultdict(list)
            latencies: list[float] = []
            used_loose: set[int] = set()
            for r in platform:
                if r.trigger != "case" or r.case_id is None:
                    findings.append(Finding("phantom", f"{r.device_id}: {r.trigger} rating "
                                                       f"{r.rating_id} (no case was rated)"))
                    continue
                by_case[(r.device_id, r.case_id)].append(r)
                case = self.cases.get((r.device_id, r.case_id))
                presses = [p for p in (case.presses if case else []) if p.level == r.level]
                if not presses and case is not None:
                    loose = next((p for p in self.loose_presses if p.device == r.device_id
                                  and p.level == r.level and p.at <= r.received_at
                                  and id(p) not in used_loose), None)
                    if loose is not None:
                        used_loose.add(id(loose))
                        presses = [loose]
                if not presses:
                    findings.append(Finding(
                        "phantom", f"{r.device_id}: rating {r.rating_id} for case {r.case_id} "
                                   f"level {r.level}: no such press"))
                    continue
                before = [p.at for p in presses if p.at <= r.received_at]
                latencies.append(r.received_at - (max(before) if before else presses[0].at))
            for (device, case_id), rows in by_case.items():
                if len(rows) > 1:
                    findings.append(Finding(
                        "duplicated", f"{device}: case {case_id} has {len(rows)} ratings at the "
                                      f"platform: {', '.join(r.rating_id for r in rows)}"))
            for rating_id, (device, case_id, level) in self.rated_frames.items():
                found = by_id.get(rating_id)
                if found is None:
                    findings.append(Finding("lost", f"{device}: rating {rating_id} (case "
                                                    f"{case_id}, level {level}) was confirmed by "
                                                    "a rated frame but is not at the platform"))
                elif (found.device_id, found.case_id, found.level) != (device, case_id, level):
                    findings.append(Finding(
                        "mismatch", f"{rating_id}: rated frame said {device}/{case_id}/{level}, "
                                    f"platform holds {found.device_id}/{found.case_id}/"
                                    f"{found.level}"))
            stored_unconfirmed: list[str] = []
            for case in self.cases.values():
                if case.outcome == "stored" and not case.rating_ids:
                    stored_unconfirmed.append(f"{case.device}/{case.case_id}")
                    if not by_case.get((case.device, case.case_id)):
                        findings.append(Finding(
                            "lost", f"{case.device}: case {case.case_id} was refused as "
                                    "duplicate_case (so it was stored) but no rating for it "
                                    "is at the platform"))
            confirmed_cases = {(d, c) for d, c, _ in self.rated_frames.values()}
            delivered_unconfirmed = sum(1 for key in by_case if key not in confirmed_cases)
            return Verdict(
                confirmed=len(self.rated_frames),
                stored_unconfirmed=len(stored_unconfirmed),
                stored_unconfirmed_cases=stored_unconfirmed,
                delivered_unconfirmed=delivered_unconfirmed,
                at_platform=len(platform),
                copies_deduplicated=sum(r.times_seen - 1 for r in platform),
                findings=findings,
                latencies_s=sorted(latencies),
            )


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None for an empty one)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_platform(db_path: Path) -> list[PlatformRating]:
    """Everything the reference platform stored, read from its SQLite file."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT rating_id, device_id, level, received_at, times_seen, record "
                          "FROM ratings ORDER BY rowid").fetchall()
    finally:
        db.close()
    out = []
    for rating_id, device_id, level, received_at, times_seen, record in rows:
        rec = json.loads(record)
        case = rec.get("case") or {}
        out.append(PlatformRating(
            rating_id, device_id, level, rec.get("trigger", "?"), case.get("case_id"),
            datetime.fromisoformat(received_at).timestamp(), times_seen))
    return out
