"""A stop is prompt whatever the serial link does (issue 17): a window system that floods
the device with frames and never reads its answers held SIGTERM for minutes (every
answer waited out the write timeout, and the Stop queued behind thousands of them)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from common.serial_codec import encode_frame
from tests.support.device import DeviceProcess

STOP_WITHIN_S = 5.0


def wait_for_log(device: DeviceProcess, text: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in device.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_stops_within_seconds_while_the_window_floods_and_never_reads(
        tmp_path: Path) -> None:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    device = DeviceProcess(tmp_path, sections={"serial": {"port": os.ttyname(slave)}})
    stop_flood = threading.Event()

    def flood() -> None:
        seq = 0
        while not stop_flood.is_set():
            seq += 1
            try:
                os.write(master, encode_frame({"type": "ping", "seq": seq}))
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return

    flooder = threading.Thread(target=flood, daemon=True)
    try:
        device.start(wait_hello=False)
        assert wait_for_log(device, "open at"), device.log()
        flooder.start()
        # The window system reads nothing: the answers fill the pty until writes fail.
        assert wait_for_log(device, "write failed"), device.log()
        assert device.proc is not None
        started = time.monotonic()
        rc = device.stop(timeout=30)
        took = time.monotonic() - started
        assert rc == 0, device.log()
        assert took < STOP_WITHIN_S, f"stop took {took:.1f} s:\n{device.log()}"
        assert "left unanswered" in device.log() or "stopped" in device.log()
    finally:
        stop_flood.set()
        device.close()
        flooder.join(5) if flooder.is_alive() else None
        os.close(master)
        os.close(slave)
