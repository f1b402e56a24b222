"""Power cuts, as far as a process can tell: the daemon is SIGKILLed at random moments
while ratings flow, and its outbox file is torn or corrupted between runs.

What must hold: every rating the window was told about (`rated` received) is in the
outbox after restart; no rating_id is ever used twice; a damaged outbox never stops
the daemon from starting, and it says what it dropped."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device.outbox import Outbox
from simulator.windowlink import LinkError, outcome_of
from tests.support.device import DeviceProcess

KILLS = int(os.environ.get("HCP_CRASH_KILLS", "100"))


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceProcess]:
    d = DeviceProcess(tmp_path, sections={"ui": {"thanks_s": 0.1, "lockout_s": 0.0}})
    yield d
    d.close()


def on_screen(case_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("case_id") == case_id


class RatingStream:
    """Plays window + citizen as fast as the device allows, until stopped."""

    def __init__(self, device: DeviceProcess, prefix: str) -> None:
        self.device = device
        self.prefix = prefix
        self.confirmed: dict[str, str] = {}   # rating_id -> case_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        w, sim = self.device.window, self.device.sim
        assert w is not None and sim is not None
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                case_id = f"{self.prefix}-{n}"
                sim.drain()
                w.send("case_completed", case_id=case_id, service_name="社保卡补办")
                if sim.wait_screen("prompt", 3, where=on_screen(case_id)) is None:
                    return
                sim.press(random.choice([5, 4, 3]))
                frame = w.wait_for(outcome_of(case_id), 3)
                if frame is None or frame["type"] != "rated":
                    return
                self.confirmed[frame["rating_id"]] = case_id
        except (OSError, LinkError):
            return  # the device died under us: that is the point


def outbox_ids(data_dir: Path) -> list[str]:
    outbox = Outbox(data_dir)
    outbox.open()
    try:
        return outbox.pending_ids()
    finally:
        outbox.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_confirmed_rating(device: DeviceProcess) -> None:
    rng = random.Random(20261125)
    confirmed: dict[str, str] = {}
    for i in range(KILLS):
        device.start()
        stream = RatingStream(device, f"K{i}")
        stream.thread.start()
        time.sleep(rng.uniform(0.0, 0.4))
        device.kill()
        stream.stop.set()
        stream.thread.join(5)
        dupes = set(stream.confirmed) & set(confirmed)
        assert not dupes, f"rating ids reused after a crash: {dupes}"
        confirmed.update(stream.confirmed)
    stored = outbox_ids(device.data_dir)
    assert len(stored) == len(set(stored)), "a rating_id appears twice in the outbox"
    missing = set(confirmed) - set(stored)
    assert not missing, f"{len(missing)} confirmed ratings lost: {sorted(missing)[:5]}"
    assert len(confirmed) >= KILLS // 2, "the stream barely ran; the test proves little"
    # and the daemon still starts and works after all that
    device.start()
    assert device.sim is not None
    first = device.sim.wait_for(lambda e: e.get("ev") == "screen", 5)
    assert first is not None and first["screen"] == "idle"


def journal_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.iterdir() if p.is_file() and "journal" in p.name
            and "corrupt" not in p.name]


@pytest.mark.parametrize("damage", ["truncate", "flip", "zeros", "garbage_tail"])
def test_damaged_outbox_never_prevents_start(device: DeviceProcess, damage: str) -> None:
    rng = random.Random(damage)
    device.start()
    stream = RatingStream(device, "D")
    stream.thread.start()
    deadline = time.monotonic() + 20
    while len(stream.confirmed) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    stream.stop.set()
    stream.thread.join(5)
    assert device.stop() == 0
    before = set(outbox_ids(device.data_dir))
    assert set(stream.confirmed) <= before

    (journal,) = journal_files(device.data_dir)
    orig = journal.read_bytes()
    data = bytearray(orig)
    at = rng.randrange(len(data) // 3, len(data))
    if damage == "truncate":
        # Cut inside a record: a cut exactly at a record's boundary (or its newline) leaves
        # a shorter journal that nothing can tell from a genuine one, so there would be no
        # damage to report (every cut offset is covered in tests/test_journal.py).
        while b"\n" in orig[at - 1:at + 1]:
            at += 1
        del data[at:]
        hit = (at, len(orig))
    elif damage == "flip":
        data[at] ^= 0x5A
        hit = (at, at + 1)
    elif damage == "zeros":
        data[at:at + 300] = bytes(min(300, len(data) - at))
        hit = (at, at + 300)
    else:
        data += b"\x00\xffhalf a record that never got its newline"
        hit = (len(orig), len(orig))
    journal.write_bytes(bytes(data))
    # Each record is one line of the journal: a rating whose line the damage did not
    # touch must survive it.
    untouched = set()
    for rid in before:
        pos = orig.find(rid.encode())
        start, end = orig.rfind(b"\n", 0, pos) + 1, orig.find(b"\n", pos) + 1
        if end <= hit[0] or start >= hit[1]:
            untouched.add(rid)

    device.start()
    assert device.sim is not None
    assert device.sim.wait_for(lambda e: e.get("ev") == "screen", 5) is not None
    w = device.window
    assert w is not None
    w.send("case_completed", case_id="after-damage")
    assert device.sim.wait_screen("prompt", 5) is not None
    device.sim.press(5)
    after_frame = w.wait_for(outcome_of("after-damage"), 5)
    assert after_frame is not None and after_frame["type"] == "rated"
    assert device.stop() == 0
    after = set(outbox_ids(device.data_dir))
    lost = before - after
    assert not (untouched & lost), f"ratings outside the damaged bytes lost: {untouched & lost}"
    assert after_frame["rating_id"] in after
    log = device.log()
    assert "outbox: recovered" in log, "the daemon must say what it dropped"
    if lost:
        assert f"dropped {len(lost)}" in log or "dropped" in log
