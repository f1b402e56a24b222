"""The evaluator's own serial frames (hello, rated, expired): numbered, written, and held
until the window system can be expected to have them."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from common.serial_codec import encode_frame
from device.outbox import StorageError
from device.ports import DriverError, SerialLink

log = logging.getLogger("hcp.device")

OUTCOME_FRAMES = ("rated", "expired")


class FrameWriter:
    """Numbers the evaluator's own frames (hello/rated/expired) and writes them.

    An outcome (`rated`, `expired`) that cannot be written because the serial link is
    down is held (the last HELD_MAX) and sent, in order, by `flush()` after the next
    `hello`: an adapter unplugged at the moment of a rating must not leave the window
    system without its `rated`. Nor must one unplugged just after: a write only reached
    the driver, and the protocol has no acknowledgement for our frames, so an outcome
    written less than SETTLE_S before the link dropped is held again (`link_lost`).
    Outcomes the link carried for SETTLE_S come out of `settled()`. Answers (ack/nak) are
    never held: the window system retries a frame that got none, and an answer to an old
    frame would only confuse it.
    """

    HELD_MAX = 64
    SEQ_BLOCK = 1000   # numbers reserved at once: one outbox write per thousand frames
    SETTLE_S = 2.0

    def __init__(self, link: SerialLink | None,
                 reserve: Callable[[int], int] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 report: Callable[[str | None], None] | None = None) -> None:
        self.link = link
        # Told each write's outcome: the driver's error, or None when a write worked.
        self._report = report
        self.seq = 0
        self.held: deque[dict[str, Any]] = deque(maxlen=self.HELD_MAX)
        self._written: deque[tuple[float, dict[str, Any]]] = deque(maxlen=self.HELD_MAX)
        self._clock = clock
        # Numbers come in blocks reserved in the outbox, so that seq keeps increasing
        # across restarts too (SPEC §4); without a reservation (a full disk), they go on
        # from the last one used in this run.
        self._reserve = reserve
        self._block_end = 1

    def send(self, frame: dict[str, Any]) -> bool:
        if self.link is None:
            return False
        kind = frame.get("type")
        if kind in ("ack", "nak"):
            return self._send(encode_frame(frame))
        if kind in OUTCOME_FRAMES:
            self.held.append(frame)   # behind any older ones: the window sees them in order
            return self.flush() > 0 and not self.held
        return self._write(frame)

    def flush(self) -> int:
        """Write held outcomes, oldest first, until one fails; returns how many went."""
        sent = 0
        while self.held and self.link is not None:
            if not self._write(self.held[0]):
                break
            self._written.append((self._clock(), self.held.popleft()))
            sent += 1
        return sent

    def link_lost(self) -> int:
        """The link dropped: outcomes written less than SETTLE_S ago are held again, ahead
        of those held since (for `flush()` after the next `hello`); returns how many."""
        now = self._clock()
        again = [frame for at, frame in self._written if now - at < self.SETTLE_S]
        self._written.clear()
        self.held.extendleft(reversed(again))
        return len(again)

    def settled(self, all_written: bool = False) -> list[dict[str, Any]]:
        """Outcomes the link has carried for SETTLE_S (or, with `all_written`, every one
        written: a clean stop with the link up): delivered, as far as can be told."""
        now = self._clock()
        done = []
        while self._written and (all_written or now - self._written[0][0] >= self.SETTLE_S):
            done.append(self._written.popleft()[1])
        return done

    def _write(self, frame: dict[str, Any]) -> bool:
        assert self.link is not None
        if self.seq + 1 >= self._block_end and self._reserve is not None:
            try:
                start = self._reserve(self.SEQ_BLOCK)
            except StorageError as e:
                log.warning("serial: cannot reserve frame numbers (%s); numbering goes on "
                            "from %d", e, self.seq + 1)
                self._block_end = self.seq + 1 + self.SEQ_BLOCK  # try again a block later
            else:
                self.seq = max(self.seq, start - 1)
                self._block_end = start + self.SEQ_BLOCK
        self.seq += 1  # numbered when written, so seq keeps increasing on the wire
        return self._send(encode_frame({**frame, "seq": self.seq}))

    def _send(self, data: bytes) -> bool:
        assert self.link is not None
        try:
            sent = self.link.send(data)
        except DriverError as e:
            # The port is open but the write failed: an outcome stays held, like one
            # written while the link was down.
            if self._report is not None:
                self._report(str(e) or type(e).__name__)
            return False
        if sent and self._report is not None:
            self._report(None)
        return sent
