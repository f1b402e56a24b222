"""Delivery's resend deadline and its resend check agree to the last bit: at the moment
`next_deadline()` names, the publish is resent (or its deadline moves on), so the loop
never wakes for a deadline that then does nothing (in virtual time: for ever)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

from hypothesis import given
from hypothesis import strategies as st

from device.delivery import Delivery
from tests.support.inprocess import Device

times = st.floats(0, 1e9, allow_nan=False)
resends = st.floats(1, 86400, allow_nan=False)


@given(at=times, resend_after_s=resends, acked=st.booleans())
def test_at_its_deadline_a_publish_is_resent_or_its_deadline_moves_on(
        at: float, resend_after_s: float, acked: bool) -> None:
    d = Delivery(resend_after_s, max_inflight=20)
    d.on_connect([])
    d.added("r" * 32)
    assert d.next_batch(at) == ["r" * 32]
    ticket = d.published("r" * 32, at)
    if acked:
        d.acked(ticket, True)
    deadline = d.next_deadline()
    assert deadline is not None
    batch = d.next_batch(deadline)
    after = d.next_deadline()
    assert batch == (["r" * 32] if acked else []) and (after is None or after > deadline)


def test_the_loop_in_virtual_time_passes_a_resend_deadline(tmp_path: Path) -> None:
    """A rating published at 1000.1 with no PUBACK: 1000.1 + 300 is 1300.1, and
    1300.1 - 1000.1 is 299.99999999999994, so the check said "not yet" at the deadline
    and the loop woke for it again at once, for ever (found by the hostile-input mix)."""
    def stuck(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("the loop spins at a resend deadline")

    device = Device(tmp_path).start()
    device.broker_up()
    device.run(0.1)
    device.keys.press(3)                        # stored and published at 1000.1
    device.run(0.5)
    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(10)
    try:
        device.run(3700)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert device.clock.now >= 1000.1 + 3700
    device.stop()
