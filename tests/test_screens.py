"""The screen view model: the core says what each screen shows, as plain data with no
pixels, and the 128×64 layout turns it into the rows the goldens show."""

from __future__ import annotations

import ast
import dataclasses
import itertools
from pathlib import Path

from device.clock import FakeClock
from device.core import screens
from device.core.machine import Evaluator, Identity
from device.core.model import FrameReceived, Option, Screen, Staff
from device.core.settings import UiSettings
from drivers.layout_oled import layout, visible_text
from tests.golden.cases import CASES

CORE = Path(__file__).resolve().parent.parent / "device" / "core"
IDENTITY = Identity("421100-HG01-W03", "421100", "HG01", "W03")


def _core() -> Evaluator:
    ids = (f"{n:032x}" for n in itertools.count(1))
    return Evaluator(IDENTITY, UiSettings(window_name="03号窗口 不动产登记"), FakeClock(),
                     new_rating_id=lambda: next(ids))


def test_the_core_knows_no_pixels() -> None:
    """No panel size, row position or font size in device/core: a colour layout is
    written from the view model alone."""
    pixel_names = {"WIDTH", "HEIGHT", "Row", "layout", "COLUMN_X", "OPTION_COLUMN_PX",
                   "visible_text"}
    found = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = getattr(node, "module", None) or ""
                names = [a.name for a in node.names]
                if any(n.split(".")[0] in ("PIL", "luma", "drivers")
                       for n in [module, *names]):
                    found.append(f"{path.name}:{node.lineno} imports {module or names}")
        for node in tree.body:  # module level: constants, classes, functions
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names.append(node.name)
            found += [f"{path.name}:{node.lineno} defines {n}" for n in names
                      if n in pixel_names]
    fields = {f.name for f in dataclasses.fields(Screen)}
    assert not fields & {"x", "y", "size", "font", "width", "height", "align"}, fields
    assert not found, found


def test_view_model_of_each_screen() -> None:
    staff = Staff("S007", "李娜")
    idle = screens.idle("03号窗口", staff, offline=True, spontaneous=True)
    assert (idle.heading, idle.lines) == ("欢迎您", ("欢迎评价本窗口服务",))
    assert idle.staff == staff and idle.staff_name == "李娜" and idle.offline
    assert idle.qr_url is None
    prompt = screens.prompt("03号窗口", staff, case_id="C1", service_name="社保卡申领",
                            remaining_s=60)
    assert prompt.heading == "社保卡申领" and prompt.lines == ("请您对本次服务进行评价",)
    assert [(o.level, o.label) for o in prompt.options] == [
        (5, "非常满意"), (4, "满意"), (3, "基本满意"), (2, "不满意"), (1, "非常不满意")]
    assert prompt.remaining_s == 60 and not prompt.spontaneous and not prompt.offline
    assert screens.prompt("W", None, case_id="C1", service_name=None,
                          remaining_s=1).heading == "本次服务"
    own = screens.prompt("W", None, case_id=None, service_name=None, remaining_s=1)
    assert own.heading == "本窗口服务" and own.spontaneous
    thanks = screens.thanks("W", None, level=4)
    assert (thanks.heading, thanks.lines, thanks.level) == ("感谢您的评价", ("满意",), 4)
    assert screens.paused("W", None, reason=None).lines == ()
    assert screens.paused("W", None, reason="午休").lines == ("午休",)
    error = screens.error("W", None, message=None)
    assert error.lines == ("设备故障", "请联系工作人员")


def test_the_core_shows_the_clerk_with_id_and_name() -> None:
    core = _core()
    core.handle(FrameReceived("staff_login", 1, {"staff_id": "S007", "staff_name": "李娜"},
                              0.0))
    assert core.shown is not None and core.shown.staff == Staff("S007", "李娜")
    core.handle(FrameReceived("staff_login", 2, {"staff_id": "S008"}, 0.0))
    assert core.shown is not None and core.shown.staff == Staff("S008", "")
    core.handle(FrameReceived("staff_logout", 3, {}, 0.0))
    assert core.shown is not None and core.shown.staff is None


def test_reason_labels_say_which_key_picks_what() -> None:
    screen = CASES["reasons_default"]
    assert [(o.level, o.code) for o in screen.options] == [
        (5, "R01"), (4, "R02"), (3, "R03"), (2, "R04"), (1, None)]
    blank = screens.reasons("W", None, case_id="C1", service_name=None, remaining_s=3,
                            level=2, choices=(Option(5, "\r\n", "X09"),
                                              Option(1, "跳过", None)))
    assert [o.label for o in blank.options] == ["X09", "跳过"]


def test_plain_text_reads_every_word_in_order() -> None:
    screen = screens.idle("03号窗口", Staff("S007", "李娜"), offline=True, spontaneous=True)
    assert screen.text().splitlines() == [
        "03号窗口", "离线", "工作人员：李娜 工号S007", "欢迎您", "欢迎评价本窗口服务"]
    prompt = CASES["prompt_5"]
    assert prompt.text().splitlines()[-1] == "5秒"
    assert "1非常不满意" in prompt.text().splitlines()


def test_oled_layout_rows_of_a_prompt() -> None:
    rows = layout(CASES["prompt_60"])
    assert [(r.y, r.shown) for r in rows] == [
        (0, "不动产转移登记"), (13, "请您对本次服务进行评价"), (26, "5非常满意"),
        (26, "4满意"), (39, "3基本满意"), (39, "2不满意"), (52, "1非常不满意"), (52, "60秒")]
    assert visible_text(CASES["thanks_1"]) == "感谢您的评价\n1非常不满意"
