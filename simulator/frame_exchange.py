"""The window business system's side of a serial conversation (SPEC §4), whatever carries
it: frames sent with fresh seqs, every line that arrives decoded and kept (bounded) until
read, and waits for a frame that matches. `simulator.windowlink`'s WindowLink (a port we
open) and WindowServer (a TCP server the evaluator connects to) only move the bytes.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

from common.serial_codec import (
    EVALUATOR_TYPES,
    CrcMode,
    Encoded,
    encode,
    reply_problem,
)
from common.serial_codec import inspect_line as codec_inspect_line

FramePredicate = Callable[[dict[str, Any]], bool]

# Frames kept for wait_for()/next_received() before the oldest unread ones are dropped:
# a long chaos run must not grow without bound on the evaluator's hellos.
INBOX_MAX = 10_000
POLL_S = 0.1
# What went on the wire: the line (with its '\n'), the frame (None for a raw line), the
# CRC sent (None when there was none) and the correct CRC.
Sent = Encoded


class LinkError(Exception):
    """The port cannot be opened, was lost, or a frame could not be written."""


def time_seq() -> int:
    """A seq derived from the wall clock (milliseconds mod 2^31), so that separate runs of a
    tool do not reuse each other's numbers without keeping a counter on disk."""
    return int(time.time() * 1000) % 2**31


# --- decoding what arrives ----------------------------------------------------------

@dataclass(frozen=True)
class Received:
    """One line that arrived, decoded as far as it goes (common.serial_codec.inspect_line).

    `error` is None for a usable frame (valid CRC, a JSON object with a string `type` and
    an integer `seq`, and for the evaluator's own types the fields SPEC §4 promises);
    otherwise the reject kind (crc, no_crc, utf8, json, too_long, bad_frame, bad_field) and
    `detail` says why. `frame` is the JSON object whenever the line parses, even with a bad
    CRC, so that a monitor can still show what it claimed to be.
    """

    line: bytes
    t: float                         # time.monotonic() when the line was complete
    at: float                        # time.time() at the same moment
    frame: dict[str, Any] | None
    error: str | None = None
    detail: str = ""
    crc_in_frame: int | None = None  # None: the line carried no *CRC suffix
    crc_computed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def type(self) -> str | None:
        value = self.frame.get("type") if self.frame else None
        return value if isinstance(value, str) else None


def inspect_line(line: bytes, require_crc: bool = True, t: float | None = None,
                 at: float | None = None) -> Received:
    """Decode any protocol line (either direction), never raising, stamped with when it
    arrived. A frame of a type the evaluator sends is also checked against SPEC §4 (a
    `rated` without its level is a `bad_field`); a window frame only for its framing, since
    judging it is the evaluator's job (`common.serial_codec.decode_line`)."""
    t = time.monotonic() if t is None else t
    at = time.time() if at is None else at
    seen = codec_inspect_line(line, require_crc)
    error, detail = seen.error, seen.detail
    if error is None and seen.frame is not None and seen.frame["type"] in EVALUATOR_TYPES:
        problem = reply_problem(seen.frame)
        if problem is not None:
            error, detail = "bad_field", problem
    return Received(line, t, at, seen.frame, error, detail, seen.crc_in_frame,
                    seen.crc_computed)


# --- sending ------------------------------------------------------------------------

class FrameExchange(ABC):
    """The send/wait API shared by WindowLink and WindowServer; subclasses move bytes."""

    def __init__(self, require_crc: bool = True) -> None:
        self.require_crc = require_crc
        self._cond = threading.Condition()
        self._inbox: deque[Received] = deque(maxlen=INBOX_MAX)
        self._seq = time_seq()
        self._seq_lock = threading.Lock()
        self._lost: str | None = None
        self._stop = threading.Event()

    # -- API -------------------------------------------------------------------------

    @property
    def lost(self) -> str | None:
        """Why the link went away (None while it works)."""
        return self._lost

    def next_seq(self) -> int:
        with self._seq_lock:
            self._seq = (self._seq + 1) % 2**31
            return self._seq

    def send(self, frame_type: str, /, **fields: Any) -> int:
        """Send one CRC-framed frame of this type; returns its seq (`seq=` overrides)."""
        seq = fields.pop("seq", None)
        seq = self.next_seq() if seq is None else seq
        self.send_frame({"type": frame_type, "seq": seq, **fields})
        return int(seq) if isinstance(seq, int) else -1

    def send_frame(self, frame: dict[str, Any], crc: CrcMode = "ok") -> Sent:
        """Send a complete frame as given (its own type and seq)."""
        sent = encode(frame, crc)
        self._write(sent.line)
        return sent

    def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given (add the b"\\n" yourself)."""
        self._write(data)

    def exchange(self, frame_type: str, /, timeout: float = 2.0,
                 **fields: Any) -> dict[str, Any] | None:
        """Send a frame and wait for its ack or nak; None when none came in time."""
        seq = self.send(frame_type, **fields)
        return self.wait_for(answer_to(seq), timeout)

    def next_received(self, timeout: float | None) -> Received | None:
        """The oldest unread line (good or bad), waiting up to `timeout` seconds for one;
        None on timeout, or at once when the link is lost and nothing is left to read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._inbox:
                if self._lost is not None or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(POLL_S if remaining is None else min(remaining, POLL_S))
            return self._inbox.popleft()

    def wait_for(self, predicate: FramePredicate, timeout: float) -> dict[str, Any] | None:
        """The first unread valid frame matching `predicate`, waiting up to `timeout`.

        It is taken out of the inbox; frames that do not match stay there, in order, for
        later calls (so an ack read early is not lost to a later wait for `rated`).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self._inbox:
                    if item.ok and item.frame is not None and predicate(item.frame):
                        self._inbox.remove(item)
                        return item.frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._lost is not None or self._stop.is_set():
                    return None
                self._cond.wait(min(remaining, POLL_S))

    def frames(self, timeout: float) -> Iterator[dict[str, Any]]:
        """Valid frames as they arrive, until `timeout` seconds from now (bad lines are
        skipped: use next_received to see them)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.next_received(max(0.0, deadline - time.monotonic()))
            if item is None:
                return
            if item.ok and item.frame is not None:
                yield item.frame

    def drain(self) -> list[Received]:
        """Take everything unread at once."""
        with self._cond:
            items = list(self._inbox)
            self._inbox.clear()
            return items

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses ----------------------------------------------------------------

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    def _deliver(self, line: bytes) -> None:
        item = inspect_line(line, self.require_crc)
        with self._cond:
            self._inbox.append(item)
            self._cond.notify_all()

    def _set_lost(self, reason: str | None) -> None:
        with self._cond:
            self._lost = reason
            self._cond.notify_all()


def answer_to(seq: int) -> FramePredicate:
    """Predicate for the ack or nak of the frame with this seq."""
    return lambda f: f.get("type") in ("ack", "nak") and f.get("seq") == seq


def outcome_of(case_id: str) -> FramePredicate:
    """Predicate for the `rated` or `expired` frame of this case."""
    return lambda f: f.get("type") in ("rated", "expired") and f.get("case_id") == case_id
