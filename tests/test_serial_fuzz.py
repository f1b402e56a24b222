"""Garbage on the serial line: the decoder never raises, the splitter never loses a good
frame, and a real link carries a storm of bad input without dropping one good frame."""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common.serial_codec import (
    DISPLAY_FIELDS,
    FIELD_LIMITS,
    KEPT_FIELDS,
    MAX_LINE,
    REQUIRED_FIELDS,
    SEQ_MAX,
    SEQ_MIN,
    WINDOW_TYPES,
    Frame,
    Rejected,
    crc16,
    decode_line,
    encode_frame,
)
from common.text import display_text
from drivers.serial_link import LineSplitter, PySerialLink
from tests.serial_helpers import Recorder, WindowServer, wait_until

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def with_crc(body: bytes) -> bytes:
    return body + b"*" + f"{crc16(body):04X}".encode()


# -- decode_line on arbitrary input ---------------------------------------------------------

@FUZZ
@given(st.binary(max_size=6000), st.booleans())
def test_decode_line_never_raises_on_arbitrary_bytes(line: bytes, require_crc: bool) -> None:
    result = decode_line(line, require_crc)
    assert isinstance(result, Frame | Rejected)
    assert_safe(result)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=8)


@st.composite
def frame_like_objects(draw: st.DrawFn) -> Any:
    """JSON objects that look like frames: known and unknown types, any field values."""
    obj = draw(st.dictionaries(
        st.sampled_from(["case_id", "service_name", "completed_at", "staff_id", "reason",
                         "phone", "id_number", "x"]) | st.text(max_size=8),
        json_values, max_size=8))
    # Mostly plausible type and seq, so that the field checks get exercised too.
    if draw(st.integers(0, 9)):
        known = st.sampled_from(sorted(WINDOW_TYPES))
        obj["type"] = draw(st.one_of(known, known, known, json_values))
    if draw(st.integers(0, 9)):
        obj["seq"] = draw(st.one_of(st.integers(), st.integers(), json_values))
    return obj if draw(st.integers(0, 9)) else draw(json_values)


UNSHOWABLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def assert_safe(result: Frame | Rejected, sent: Any = None) -> None:
    """What the rest of the device may rely on, whatever the window sent."""
    if isinstance(result, Frame):
        assert result.type in WINDOW_TYPES and SEQ_MIN <= result.seq <= SEQ_MAX
        assert set(result.fields) <= set(KEPT_FIELDS[result.type])
        for name, value in result.fields.items():
            assert isinstance(value, str) and len(value) <= FIELD_LIMITS[name]
            value.encode("utf-8")  # storable and publishable
            # Safe to show and to log: no control, format or separator character.
            assert not any(unicodedata.category(ch) in UNSHOWABLE for ch in value), name
            if name in DISPLAY_FIELDS:
                assert display_text(value) == value
        if "completed_at" in result.fields:
            moment = datetime.fromisoformat(result.fields["completed_at"].replace("Z", "+00:00"))
            assert 2000 <= moment.year <= 2099
            moment.astimezone()  # representable in any zone: no OverflowError downstream
    else:
        if result.nak is not None:
            assert result.seq is not None and SEQ_MIN <= result.seq <= SEQ_MAX
        # The detail goes to logs and events: it never repeats a value that was sent.
        for value in (sent.values() if isinstance(sent, dict) else ()):
            if isinstance(value, str) and len(value) >= 4 and value not in WINDOW_TYPES:
                assert value not in result.detail


@FUZZ
@given(frame_like_objects(), st.booleans())
def test_crc_valid_json_never_raises_and_frames_are_safe(obj: Any, ascii_only: bool) -> None:
    line = with_crc(json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))
    result = decode_line(line)
    assert isinstance(result, Frame | Rejected)
    assert_safe(result, obj)


hostile_text = st.text(st.characters(codec="utf-8") | st.sampled_from(
    ["\r", "\n", "\u2028", "\u2029", "\u202e", "\u200b", "\x00", "\x1b",
     "\x85", "\t", "\ufeff", "\U000f0000"]), max_size=140)
hostile_numbers = st.integers() | st.integers(2**62, 2**70) | st.integers(-(2**70), -(2**62))
hostile_dates = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                     "2026-11-25T10:31:07+23:59", "2026-11-25\x0010:31:07", "2026-W48-3",
                     "20261125T103107", "2026-11-25T10:31:07.123456789"]))


@st.composite
def hostile_frames(draw: st.DrawFn) -> dict[str, Any]:
    """Known frame types whose kept fields hold hostile text, numbers and dates."""
    ftype = draw(st.sampled_from(sorted(WINDOW_TYPES)))
    frame: dict[str, Any] = {"type": ftype, "seq": draw(hostile_numbers)}
    for name in KEPT_FIELDS[ftype]:
        if name in REQUIRED_FIELDS.get(ftype, ()) or draw(st.booleans()):
            frame[name] = draw(hostile_dates if name == "completed_at" else
                               hostile_text | hostile_numbers | st.none())
    return frame


@FUZZ
@given(hostile_frames(), st.booleans())
def test_hostile_text_numbers_and_dates_are_refused_or_made_safe(
        frame: dict[str, Any], crlf: bool) -> None:
    line = encode_frame(frame)[:-1] + (b"\r" if crlf else b"")
    result = decode_line(line)
    assert_safe(result, frame)
    seq = frame["seq"]
    if isinstance(result, Rejected) and result.error != "too_long":
        # Answered exactly when the seq is one a window system's counter can hold.
        assert (result.seq is not None) == (SEQ_MIN <= seq <= SEQ_MAX)


@FUZZ
@given(st.lists(st.text(max_size=50), max_size=10), st.booleans())
def test_arbitrary_text_lines_never_raise(lines: list[str], require_crc: bool) -> None:
    for text in lines:
        body = text.encode("utf-8", "surrogatepass")
        for line in (body, with_crc(body)):
            assert_safe(decode_line(line, require_crc))


def storable_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size)


def showable_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"]),
                   max_size=max_size)


@st.composite
def window_frames(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    """A valid frame from the window (with unlisted extras) and the fields it must keep:
    identifiers exactly as sent, display texts normalised."""
    ftype = draw(st.sampled_from(sorted(WINDOW_TYPES)))
    kept: dict[str, str] = {}
    sent: dict[str, str] = {}
    for name in KEPT_FIELDS[ftype]:
        required = name in REQUIRED_FIELDS.get(ftype, ())
        if not required and draw(st.booleans()):
            continue
        if name == "completed_at":
            value = draw(st.datetimes(min_value=datetime(2000, 1, 1),
                                      max_value=datetime(2099, 12, 31),
                                      timezones=st.timezones())).isoformat()
            kept[name] = value
        elif name == "eval_url":  # SPEC §10: an http(s) URL of at most 512 characters
            value = draw(st.sampled_from(["http://", "https://", "HTTPS://"])) + draw(
                st.from_regex(r"[a-z0-9.-]{1,60}(/[A-Za-z0-9%?&=._~-]{0,400})?",
                              fullmatch=True))
            kept[name] = value
        elif name in DISPLAY_FIELDS:
            value = draw(storable_text(FIELD_LIMITS[name]))
            kept[name] = display_text(value)
        else:
            value = draw(showable_text(FIELD_LIMITS[name]))
            if required:
                assume(value.strip())
            kept[name] = value
        sent[name] = value
    extras = draw(st.dictionaries(
        st.sampled_from(["applicant_name", "id_number", "phone", "remark"]),
        storable_text(20), max_size=4))
    frame = {**extras, **sent, "type": ftype, "seq": draw(st.integers(SEQ_MIN, SEQ_MAX))}
    return frame, kept


@FUZZ
@given(window_frames(), st.booleans())
def test_every_valid_frame_round_trips(generated: tuple[dict[str, Any], dict[str, str]],
                                       crlf: bool) -> None:
    frame, kept = generated
    line = encode_frame(frame)[:-1]
    assume(len(line) <= MAX_LINE)
    result = decode_line(line + (b"\r" if crlf else b""))
    assert result == Frame(frame["type"], frame["seq"], kept)


# -- the splitter under any chunking --------------------------------------------------------

def reference_cut(line: bytes) -> bytes:
    """What the link must deliver for one line, from SerialLink's contract."""
    if len(line) <= MAX_LINE + 1:
        return line
    cut = line[:MAX_LINE + 1]
    return line[:MAX_LINE + 2] if cut.endswith(b"\r") else cut


stream_lines = st.lists(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
    | st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from([b"x", b"\r", b"ab\r"]),
                st.integers(MAX_LINE - 2, 3 * MAX_LINE)),
    max_size=12)


@FUZZ
@given(stream_lines, st.lists(st.integers(1, 6000), min_size=1, max_size=30))
def test_splitter_delivers_each_line_once_whatever_the_chunking(
        lines: list[bytes], chunk_sizes: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter()
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = chunk_sizes[i % len(chunk_sizes)]
        out += splitter.feed(stream[pos:pos + size])
        pos, i = pos + size, i + 1
    assert out == [reference_cut(line) for line in lines]


# -- a storm through a real link ----------------------------------------------------------

class Storm:
    """The byte stream a broken or hostile window system sends, and what it must yield."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.parts: list[bytes] = []
        self.good: list[Frame] = []
        self.rejected = 0
        self.seq = 0

    def good_frame(self) -> None:
        self.seq += 1
        frame = {"type": "case_completed", "seq": self.seq, "case_id": f"HB-{self.seq:06d}",
                 "service_name": "户籍迁移（省内）", "applicant_name": "张三",
                 "phone": "13800138000"}
        line = encode_frame(frame)
        if self.rng.random() < 0.3:
            line = line[:-1] + b"\r\n"
        self.parts.append(line)
        self.good.append(Frame("case_completed", self.seq, {
            "case_id": f"HB-{self.seq:06d}", "service_name": "户籍迁移（省内）"}))

    def bad_lines(self, data: bytes, count: int = 1) -> None:
        self.parts.append(data)
        self.rejected += count

    def random_bytes(self, size: int) -> bytes:
        return self.rng.randbytes(size).replace(b"\n", b"?")

    def garbage(self) -> Iterator[None]:
        rng = self.rng
        ping = encode_frame({"type": "ping", "seq": 77})[:-1]
        kinds: list[Callable[[], None]] = [
            lambda: self.bad_lines(self.random_bytes(rng.randint(0, 300)) + b"\n"),
            lambda: self.bad_lines(ping[:rng.randint(1, len(ping) - 1)] + b"\n"),   # truncated
            lambda: self.bad_lines(ping[:-4] + b"%04X\n" % ((crc16(ping[:-5]) + 1) % 65536)),
            lambda: self.bad_lines(self.random_bytes(10_000) + b"\n"),
            lambda: self.bad_lines(b"\r" * rng.randint(1, 5) + b"\n"),
            lambda: self.bad_lines(b"\n" * 3, count=3),
            lambda: self.bad_lines(with_crc(b'{"type":"ping","seq":3,"x":"\xc3\x28"}') + b"\n"),
            lambda: self.bad_lines(b"[" * 100_000 + b"\n"),                         # too long
            lambda: self.bad_lines(with_crc(b"[" * 2000 + b"]" * 2000) + b"\n"),    # too deep
            lambda: self.bad_lines(encode_frame({"type": "cancel", "seq": 5, "case_id": 5})),
            lambda: self.bad_lines(encode_frame({"type": "ping", "seq": "5"})),
            lambda: self.bad_lines(encode_frame({"type": "unplug", "seq": 6})),
            lambda: self.bad_lines(b'{"type":"ping","seq":8}\n'),                 # bare JSON
        ]
        for kind in kinds:
            kind()
            yield
        for _ in range(40):
            rng.choice(kinds)()
            yield
        self.bad_lines(self.random_bytes(1_000_000) + b"\n")                       # 1 MB
        yield

    def build(self) -> bytes:
        self.good_frame()
        for _ in self.garbage():
            self.good_frame()
        return b"".join(self.parts)


@pytest.fixture
def server() -> Iterator[WindowServer]:
    window = WindowServer()
    window.listen()
    yield window
    window.close()


def test_storm_through_a_socket_link_loses_no_good_frame(server: WindowServer) -> None:
    storm = Storm(seed=20261125)
    stream = storm.build()
    link = PySerialLink(server.url, 115200, reopen_s=0.1)
    rec = Recorder()
    link.start(rec.on_line, rec.on_open)
    try:
        conn = server.accept()
        # pyserial flushes the input when it opens the port: a window system talks
        # once the link is up (it sees our hello), not the instant TCP connects.
        assert wait_until(lambda: rec.opens == [True])
        rng = random.Random(1)
        pos = 0
        while pos < len(stream):  # uneven writes: frames straddle read chunks
            size = rng.choice([1, 7, 100, 4097, 65536, 300_000])
            conn.sendall(stream[pos:pos + size])
            pos += size
        expected_lines = len(storm.good) + storm.rejected
        assert wait_until(lambda: len(rec.lines) >= expected_lines, timeout=20)

        results = [decode_line(line) for line in rec.lines]
        good = [r for r in results if isinstance(r, Frame)]
        rejected = [r for r in results if isinstance(r, Rejected)]
        assert good == storm.good
        assert len(rejected) == storm.rejected
        assert {r.error for r in rejected} >= {
            "too_long", "crc", "no_crc", "utf8", "json", "bad_frame", "bad_field",
            "unknown_type"}
        assert max(len(line) for line in rec.lines) <= MAX_LINE + 2  # memory stayed bounded

        # The reader is alive and in step: the link still works both ways.
        conn.sendall(encode_frame({"type": "ping", "seq": 999}))
        assert wait_until(lambda: len(rec.lines) == expected_lines + 1)
        assert decode_line(rec.lines[-1]) == Frame("ping", 999, {})
        assert link.send(encode_frame({"type": "ack", "seq": 999}))
        assert server.recv_until(b"\n") == encode_frame({"type": "ack", "seq": 999})
        assert rec.opens == [True]  # garbage never looked like a lost port
    finally:
        link.close()
