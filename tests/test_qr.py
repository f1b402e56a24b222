"""扫码评价 (SPEC §10): the qr_url template, a frame's eval_url, where the core shows
them, and the QR code a phone would read off the frame (decoded with zxing-cpp)."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from common.configschema import ConfigError
from common.serial_codec import Frame, Rejected, decode_line, encode_frame
from device.clock import FakeClock
from device.config import parse_device_config
from device.core import qr_url, screens
from device.core.machine import Evaluator, Identity
from device.core.model import FrameReceived, KeyDown, Persist, Screen, Staff, Tick
from device.core.settings import UiSettings
from device.remote_config import parse_remote_config
from drivers import qr
from drivers.fonts import fonts_from_file
from drivers.render import render_frame
from drivers.sim import SimServer
from drivers.sim_display import SimDisplay, SimFrame
from tests.golden.cases import GOLDEN_FONT, GOLDEN_FONT_INDEX, QR_CASE, QR_WINDOW

IDENTITY = Identity("421100-HG01-W03", "421100", "HG01", "W03")
DEVICE = {"device_id": "421100-HG01-W03", "region_code": "421100", "hall_id": "HG01",
          "window_id": "W03"}
TEMPLATE = "https://pj.example.gov.cn/h5?projectNo={case_id}&deviceCode={device_id}"


def decode(image: Image.Image) -> list[str]:
    """The texts of every QR code a scanner finds in `image`."""
    return [r.text for r in zxingcpp.read_barcodes(image.convert("L"))]


# --- the template -------------------------------------------------------------------


def test_placeholders_are_url_encoded() -> None:
    url = qr_url.fill(TEMPLATE, DEVICE, {"case_id": "2026/11 25&x=1#é"})
    assert url == ("https://pj.example.gov.cn/h5?projectNo=2026%2F11%2025%26x%3D1%23%C3%A9"
                   "&deviceCode=421100-HG01-W03")
    assert url is not None
    assert parse_qs(urlsplit(url).query)["projectNo"] == ["2026/11 25&x=1#é"]


@given(st.text(max_size=64))
@settings(max_examples=200, deadline=None)
def test_any_case_id_comes_back_intact_from_the_query(case_id: str) -> None:
    url = qr_url.fill("https://a.example/h5?p={case_id}&w={window_id}", DEVICE,
                      {"case_id": case_id})
    assert url is not None
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert query["w"] == ["W03"]
    assert query["p"] == [case_id.encode("utf-8", "surrogatepass").decode(
        "utf-8", "surrogatepass")]


def test_every_placeholder_is_known_and_a_missing_case_field_is_empty() -> None:
    template = ("https://x.example/{region_code}/{hall_id}/{window_id}/{device_id}"
                "?c={case_id}&s={service_code}")
    assert qr_url.template_problem(template) is None
    assert qr_url.fill(template, DEVICE, {"case_id": "C1"}) == (
        "https://x.example/421100/HG01/W03/421100-HG01-W03?c=C1&s=")


@pytest.mark.parametrize(("template", "why"), [
    ("https://x.example/?u={user}", "unknown placeholder {user}"),
    ("https://x.example/?u={case_id!r}", "takes no format"),
    ("https://x.example/?u={case_id:>9}", "takes no format"),
    ("https://x.example/?u={}", "unknown placeholder {}"),
    ("https://x.example/?u={case_id", "lone {"),
    ("https://x.example/?u=}", "lone {"),
    ("ftp://x.example/{case_id}", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("https://x.example/a b", "spaces"),
    ("https://x.example/" + "a" * 600, "at most 512"),
])
def test_bad_templates_are_refused_with_the_reason(template: str, why: str) -> None:
    problem = qr_url.template_problem(template)
    assert problem is not None and why in problem


def test_an_unknown_placeholder_is_a_config_error_naming_the_key() -> None:
    data: dict[str, Any] = {
        "device": {"id": "D1", "region_code": "421100", "hall_id": "HG01", "window_id": "W03",
                   "window_name": "03号窗口", "data_dir": "/var/lib/hcp-device"},
        "serial": {"port": ""}, "input": {"kind": "sim"}, "display": {"kind": "sim"},
        "ui": {"qr_url": "https://pj.example.gov.cn/h5?id={idcard}"}}
    with pytest.raises(ConfigError) as e:
        parse_device_config(Path("/etc/hcp/device.toml"), data)
    assert any("[ui] qr_url" in p and "unknown placeholder {idcard}" in p
               for p in e.value.problems), e.value.problems
    data["ui"]["qr_url"] = TEMPLATE
    assert parse_device_config(Path("/etc/hcp/device.toml"), data).ui.qr_url == TEMPLATE


def test_the_config_topic_sets_qr_url_with_the_same_rules() -> None:
    assert parse_remote_config(json.dumps({"qr_url": TEMPLATE}).encode()) == {
        "qr_url": TEMPLATE}
    assert parse_remote_config(b'{"qr_url": ""}') == {"qr_url": ""}
    problems = parse_remote_config(json.dumps({"qr_url": "https://x.example/{phone}"}).encode())
    assert isinstance(problems, list)
    assert any("qr_url" in p and "unknown placeholder {phone}" in p for p in problems)


# --- eval_url on the wire -----------------------------------------------------------


def _case_frame(**fields: Any) -> Frame | Rejected:
    return decode_line(encode_frame({"type": "case_completed", "seq": 7, "case_id": "C1",
                                     **fields})[:-1])


def test_eval_url_is_kept_when_it_is_an_http_url_of_at_most_512_characters() -> None:
    url = "https://pj.example.gov.cn/h5?t=" + "a" * (512 - 31)
    assert len(url) == 512
    frame = _case_frame(eval_url=url)
    assert isinstance(frame, Frame) and frame.fields["eval_url"] == url


@pytest.mark.parametrize("url", [
    "https://pj.example.gov.cn/h5?t=" + "a" * (513 - 31),
    "ftp://pj.example.gov.cn/h5",
    "javascript:alert(1)",
    "https:///no-host",
    "https://pj.example.gov.cn/h5?\nx",
    "pj.example.gov.cn/h5",
])
def test_a_bad_eval_url_is_nak_bad_field_without_repeating_it(url: str) -> None:
    frame = _case_frame(eval_url=url)
    assert isinstance(frame, Rejected) and frame.nak == "bad_field"
    assert "eval_url" in frame.detail and url not in frame.detail


def test_a_non_string_eval_url_is_bad_field() -> None:
    frame = _case_frame(eval_url=5)
    assert isinstance(frame, Rejected) and frame.nak == "bad_field"


# --- where the core shows it --------------------------------------------------------


class Core:
    def __init__(self, template: str) -> None:
        self.clock = FakeClock()
        ids = (f"{n:032x}" for n in itertools.count(1))
        self.core = Evaluator(IDENTITY, UiSettings(window_name="03号窗口", qr_url=template,
                                                   spontaneous_min_interval_s=0),
                              self.clock, new_rating_id=lambda: next(ids))
        self.persisted: list[dict[str, Any]] = []
        self.seq = itertools.count(1)
        self.run(self.core.start(self.clock.now))

    def run(self, actions: list[Any]) -> None:
        self.persisted += [a.rating for a in actions if isinstance(a, Persist)]

    def case(self, **fields: Any) -> None:
        self.run(self.core.handle(FrameReceived("case_completed", next(self.seq), fields,
                                                self.clock.now)))

    def press(self, level: int) -> None:
        self.run(self.core.handle(KeyDown(level, self.clock.now)))

    @property
    def screen(self) -> Screen:
        assert self.core.shown is not None
        return self.core.shown


def test_idle_shows_the_template_only_when_it_needs_no_case() -> None:
    assert Core(TEMPLATE).screen.qr_url is None
    window = "https://pj.example.gov.cn/h5?deviceCode={device_id}&w={window_id}"
    assert Core(window).screen.qr_url == (
        "https://pj.example.gov.cn/h5?deviceCode=421100-HG01-W03&w=W03")
    assert Core("").screen.qr_url is None


def test_the_prompt_shows_the_cases_url_and_eval_url_replaces_the_template() -> None:
    c = Core(TEMPLATE)
    c.case(case_id="C 1", service_code="S1")
    assert c.screen.name == "prompt"
    assert c.screen.qr_url == ("https://pj.example.gov.cn/h5?projectNo=C%201"
                               "&deviceCode=421100-HG01-W03")
    c.press(5)
    c.clock.advance(10)
    own = "https://h5.example.gov.cn/rate?token=abc"
    c.case(case_id="C2", eval_url=own)
    c.run(c.core.handle(Tick(c.clock.now)))
    assert c.screen.name == "prompt" and c.screen.case_id == "C2"
    assert c.screen.qr_url == own
    c.press(4)
    # Neither URL goes into a rating.
    assert len(c.persisted) == 2
    for rating in c.persisted:
        text = json.dumps(rating, ensure_ascii=False)
        assert "pj.example" not in text and "h5.example" not in text
        assert "eval_url" not in text and "qr" not in text


def test_other_screens_show_no_qr() -> None:
    c = Core("https://pj.example.gov.cn/h5?d={device_id}")
    c.press(5)  # spontaneous rating: thanks
    assert c.screen.name == "thanks" and c.screen.qr_url is None


# --- the code itself ------------------------------------------------------------------


def test_draw_fits_the_largest_whole_pixel_scale_with_a_quiet_zone() -> None:
    placed = qr.fit(29, 64, qr.MIN_QUIET)
    assert placed is not None and placed.scale == 1  # 29 + 2*2*2 > 32: not 2
    placed = qr.fit(25, 64, qr.MIN_QUIET)
    assert placed is not None and placed.scale == 2 and placed.x == 7
    assert qr.fit(61, 64, qr.MIN_QUIET) is None


@pytest.mark.parametrize("url", [QR_WINDOW, QR_CASE, "https://x.example/" + "汉" * 30])
def test_a_drawn_code_decodes_to_its_url(url: str) -> None:
    image = Image.new("RGB", (300, 300), (30, 60, 90))
    assert qr.draw(image, url, (20, 30, 240), light=(255, 255, 255), dark=(0, 0, 0))
    assert decode(image) == [url]


def test_a_url_too_long_for_the_square_is_not_drawn() -> None:
    image = Image.new("1", (64, 64), 0)
    assert not qr.draw(image, "https://x.example/" + "a" * 490, (0, 0, 64), light=255, dark=0)
    assert image.getbbox() is None


@pytest.fixture(scope="module")
def fonts() -> Any:
    return fonts_from_file(GOLDEN_FONT, GOLDEN_FONT_INDEX)


def _mono_image(frame_b64: str) -> Image.Image:
    return Image.frombytes("1", (128, 64), base64.b64decode(frame_b64))


@pytest.mark.parametrize("staff", [None, Staff("S0231", "张晓明")])
def test_the_oled_idle_frame_in_the_screen_event_decodes_to_the_url_it_names(
        tmp_path: Path, fonts: Any, staff: Staff | None) -> None:
    server = SimServer(tmp_path / "sim.sock")
    events: list[dict[str, Any]] = []
    server.broadcast = lambda event, remember=False: events.append(event)  # type: ignore
    display = SimDisplay(server, lambda s: SimFrame(*render_frame(s, fonts)))
    display.show(screens.idle("03号窗口 不动产登记", staff, offline=False, spontaneous=True,
                              qr_url=QR_WINDOW))
    event = events[-1]
    assert event["qr"] == QR_WINDOW and event["format"] == "mono1"
    # The OLED lights white on black; a phone sees the lit square with dark modules.
    assert decode(_mono_image(event["frame"]).convert("L").resize(
        (512, 256), Image.Resampling.NEAREST)) == [QR_WINDOW]
    # The prompt carries the case's URL but the 128×64 panel has no room: no code, qr null.
    display.show(screens.prompt("03号窗口", None, case_id="C1", service_name="x",
                                remaining_s=60, qr_url=QR_CASE))
    assert events[-1]["qr"] is None
    assert decode(_mono_image(events[-1]["frame"]).resize((512, 256))) == []
    display.close()


def test_oled_idle_without_room_for_the_code_shows_the_usual_idle(fonts: Any) -> None:
    long_url = "https://x.example/" + "a" * 480
    screen = screens.idle("03号窗口", None, offline=False, spontaneous=False, qr_url=long_url)
    frame, text, shown = render_frame(screen, fonts)
    plain = screens.idle("03号窗口", None, offline=False, spontaneous=False)
    assert shown is None and (frame, text) == render_frame(plain, fonts)[:2]
    assert "扫码评价" not in text


def test_decode_helper_sees_nothing_in_a_blank_image() -> None:
    assert decode(Image.new("L", (100, 100), 255)) == []
