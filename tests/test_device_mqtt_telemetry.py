"""What the device reports on its own (SPEC §7): telemetry every `telemetry_s` with the
fields a hall dashboard needs, events as they happen, and an honest clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simulator.windowlink import answer_to
from tests.support.device import DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.test_device_mqtt_support import Watcher, device_factory, press_rating

__all__ = ["device_factory"]

DeviceFactory = Callable[..., DeviceProcess]
TELEMETRY_FIELDS = {"at", "backlog", "oldest_pending_s", "uptime_s", "serial_errors",
                    "disk_free_mb", "clock_synced", "link", "inflight", "version"}


def test_telemetry_events_and_an_unsynced_clock(
        mosquitto: Mosquitto, device_factory: DeviceFactory, tmp_path: Path) -> None:
    hall = Watcher(mosquitto)
    device = device_factory(
        mosquitto.port, mqtt={"telemetry_s": 1, "resend_after_s": 600},
        ui={"prompt_timeout_s": 1},
        clock={"sync_file": str(tmp_path / "no-such-file"), "assume_synced": False})
    try:
        device.start()
        w = device.window
        assert w is not None

        # The clock cannot be trusted: said once, and every rating carries it.
        unsynced = hall.wait_event("clock_unsynced")
        assert unsynced is not None, device.log()
        assert unsynced["sync_file"].endswith("no-such-file") and unsynced["at"].endswith("Z")
        first = hall.wait_for("telemetry")
        assert first is not None, device.log()
        assert TELEMETRY_FIELDS <= set(first), first
        assert first["clock_synced"] is False
        assert first["backlog"] == 0 and first["oldest_pending_s"] is None
        # (the first sample goes out at connect, maybe before the serial port opened)
        assert first["link"]["broker"] == "connected" and first["link"]["broker_connects"] == 1
        assert first["disk_free_mb"] > 0

        press_rating(device, 5)
        rating = hall.wait_for("rating")
        assert rating["clock_synced"] is False

        # A prompt nobody answers expires: an event names the case.
        seq = w.send("case_completed", case_id="C-EXP", service_name="社保卡申领")
        assert w.wait_for(answer_to(seq), 5) is not None
        expired = hall.wait_event("prompt_expired")
        assert expired is not None, device.log()
        assert expired["case_id"] == "C-EXP"
        # A cancelled one too.
        w.send("case_completed", case_id="C-CAN")
        assert device.sim is not None and device.sim.wait_screen("prompt", 5)
        w.send("cancel", case_id="C-CAN")
        cancelled = hall.wait_event("prompt_cancelled")
        assert cancelled is not None and cancelled["case_id"] == "C-CAN"

        # Garbage on the serial line is counted; the unreceipted rating shows as backlog.
        w.send_raw(b'{"type":"ping","seq":1}*0000\n')
        mark = hall.mark()
        later = hall.wait_for("telemetry", lambda t: t["serial_errors"] >= 1, after=mark)
        assert later is not None, device.log()
        assert later["backlog"] == 1 and isinstance(later["oldest_pending_s"], int)
        assert later["link"]["serial"] == "open" and later["serial_open"] is True
        assert later["uptime_s"] >= first["uptime_s"]
        assert len(hall.of("telemetry")) >= 2   # periodic, not once
    finally:
        hall.close()
