"""The chaos run's report: what was confirmed, what was injected, and whether the ledger
balanced (no loss, no duplicate, no phantom, no crash)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.chaos.chain import Crash
from tests.chaos.ledger import Ledger, Verdict, percentile

if TYPE_CHECKING:
    from tests.chaos.runner import ChaosOptions


@dataclass
class Report:
    seed: int
    workdir: Path
    options: ChaosOptions
    ledger: Ledger
    verdict: Verdict | None
    crashes: list[Crash]
    balanced: bool
    drain_s: float | None
    phases: dict[str, float]
    duration_s: float
    fault_errors: list[str]
    skipped: dict[str, str]
    worker_errors: list[str]
    log_findings: list[str]
    network: str = ""          # where the devices' uplinks ran (namespaces or loopback)

    @property
    def ok(self) -> bool:
        return (self.verdict is not None and self.verdict.ok and self.balanced
                and not self.crashes and not self.fault_errors and not self.worker_errors
                and not self.log_findings)

    def summary(self) -> dict[str, Any]:
        v = self.verdict
        lat = v.latencies_s if v else []
        outcomes = self.ledger.outcomes()
        return {
            "ok": self.ok,
            "seed": self.seed,
            "minutes": self.options.minutes,
            "devices": self.options.devices,
            "duration_s": round(self.duration_s, 1),
            "presses": self.ledger.presses_total(),
            "cases": dict(sorted(outcomes.items())),
            "ratings_confirmed": v.confirmed if v else None,
            "ratings_stored_unconfirmed": v.stored_unconfirmed if v else None,
            "ratings_stored_unconfirmed_cases": v.stored_unconfirmed_cases if v else [],
            "ratings_delivered_unconfirmed": v.delivered_unconfirmed if v else None,
            "ratings_at_platform": v.at_platform if v else None,
            "copies_deduplicated_by_platform": v.copies_deduplicated if v else None,
            "lost": v.count("lost") if v else None,
            "duplicated": v.count("duplicated") if v else None,
            "phantom": v.count("phantom") + v.count("mismatch") if v else None,
            "crashes": len(self.crashes),
            "press_to_platform_s": {
                "p50": _round(percentile(lat, 50)), "p99": _round(percentile(lat, 99)),
                "max": _round(lat[-1] if lat else None)},
            "max_backlog": {"total": self.ledger.backlog_total_max,
                            "by_device": dict(sorted(self.ledger.backlog_max.items()))},
            "storage_failures_seen": sum(self.ledger.error_screens.values()),
            "faults": dict(sorted(self.ledger.faults.items())),
            "faults_skipped": self.skipped,
            "device_events": dict(sorted(self.ledger.device_events.items())),
            "drain_s": _round(self.drain_s),
            "phases_s": {k: round(v, 1) for k, v in self.phases.items()},
            "balanced": self.balanced,
            "network": self.network,
        }

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"chaos run: {'PASS' if self.ok else 'FAIL'}  (seed {self.seed}, "
            f"{self.options.minutes:g} min of faults, {self.options.devices} devices, "
            f"{s['duration_s']:.0f} s in all)",
            f"  devices' network             {self.network or '-'}",
            f"  presses                      {s['presses']}",
            "  cases                        "
            + ", ".join(f"{k} {n}" for k, n in s["cases"].items()),
            f"  ratings confirmed (rated)    {s['ratings_confirmed']}",
            f"  stored, rated frame lost     {s['ratings_stored_unconfirmed']}"
            "  (proved by duplicate_case)"
            + "".join(f"\n    {c}" for c in s["ratings_stored_unconfirmed_cases"][:10]),
            f"  delivered, never confirmed   {s['ratings_delivered_unconfirmed']}",
            f"  ratings at the platform      {s['ratings_at_platform']}"
            f"  ({s['copies_deduplicated_by_platform']} extra copies de-duplicated)",
            f"  lost                         {s['lost']}",
            f"  duplicated                   {s['duplicated']}",
            f"  phantom                      {s['phantom']}",
            f"  crashes                      {s['crashes']}",
            "  press -> platform            "
            f"p50 {_fmt(s['press_to_platform_s']['p50'])}, "
            f"p99 {_fmt(s['press_to_platform_s']['p99'])}, "
            f"max {_fmt(s['press_to_platform_s']['max'])}",
            f"  max backlog                  {s['max_backlog']['total']} in all; by device "
            + ", ".join(f"{k} {n}" for k, n in s["max_backlog"]["by_device"].items()),
            f"  storage failures seen        {s['storage_failures_seen']} (error screens)",
            f"  final drain                  {_fmt(s['drain_s'])}"
            f"{'' if self.balanced else ' — DID NOT BALANCE in time'}"
            f"  (start {_fmt(s['phases_s'].get('start'))}, overtime until every kind was "
            f"met {_fmt(s['phases_s'].get('overtime'))}, windows wind down "
            f"{_fmt(s['phases_s'].get('wind_down'))}, stop {_fmt(s['phases_s'].get('stop'))})",
            f"  faults injected              {sum(s['faults'].values())}",
        ]
        lines += [f"    {kind:<26} {n}" for kind, n in s["faults"].items()]
        for kind, reason in self.skipped.items():
            lines.append(f"    {kind:<26} skipped: {reason}")
        if s["device_events"]:
            lines.append("  device events seen on MQTT   "
                         + ", ".join(f"{k} {n}" for k, n in s["device_events"].items()))
        problems: list[str] = []
        if self.verdict is not None:
            problems += [f"{f.kind}: {f.detail}" for f in self.verdict.findings]
        else:
            problems.append("the run did not get as far as the reckoning")
        problems += [f"crash: {c.component} (status {c.returncode}):\n{c.log_tail[-1500:]}"
                     for c in self.crashes]
        problems += [f"fault injection: {e}" for e in self.fault_errors]
        problems += [f"window worker: {e}" for e in self.worker_errors]
        problems += [f"log: {e}" for e in self.log_findings]
        if problems:
            lines.append(f"  PROBLEMS ({len(problems)}):")
            lines += ["    - " + p.replace("\n", "\n      ") for p in problems[:40]]
            if len(problems) > 40:
                lines.append(f"    ... and {len(problems) - 40} more")
        lines.append(f"  work directory               {self.workdir}")
        return "\n".join(lines)

    def json(self) -> str:
        data = self.summary()
        data["problems"] = ([f"{f.kind}: {f.detail}" for f in self.verdict.findings]
                            if self.verdict else ["no reckoning"])
        data["fault_log"] = self.ledger.fault_log
        return json.dumps(data, ensure_ascii=False, indent=2)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"
