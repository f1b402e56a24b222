"""The watcher's config: the example in docs/alerts.md is valid and shows the defaults;
a minimal file gets them; hall hours inherit the global holidays."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from broker_bridge.watch.config import parse_watch_config
from broker_bridge.watch.settings import Rules
from common.configschema import load_toml
from tests.support.bridge import REPO, toml_text


def test_the_documented_example_is_valid_and_shows_the_defaults(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "alerts.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    # The example's state_file lives in the service's directory; this machine has none.
    text = re.sub(r'^state_file = "[^"]*"', f'state_file = "{tmp_path / "state.json"}"',
                  example.group(1), flags=re.M)
    path = tmp_path / "watch.toml"
    path.write_text(text)
    config = parse_watch_config(path, load_toml(path))
    assert config.rules == Rules()
    assert config.mqtt.client_id == "hcp-watch-1" and config.mqtt.shared_group == ""
    assert config.watch.dedupe_per_device == 500 and config.watch.save_every_s == 10.0
    hg01 = config.calendar.halls["HG01"]
    shanghai = ZoneInfo("Asia/Shanghai")
    assert hg01.is_open(datetime(2026, 9, 27, 9, tzinfo=shanghai).timestamp())  # 调休 Sunday
    assert not hg01.is_open(datetime(2026, 10, 2, 9, tzinfo=shanghai).timestamp())

    minimal = tmp_path / "minimal.toml"
    minimal.write_text(toml_text({"watch": {"state_file": str(tmp_path / "s.json"),
                                            "holidays": ["2026-12-25"]},
                                  "halls.HG02": {"open": ["mon-sun 00:00-24:00"]}}))
    defaults = parse_watch_config(minimal, load_toml(minimal))
    assert defaults.rules == Rules()
    assert defaults.mqtt.client_id.startswith("hcp-watch-")
    assert defaults.calendar.default.weekly[0] == ((510, 1050),)      # mon 08:30-17:30
    assert date(2026, 12, 25) in defaults.calendar.halls["HG02"].holidays
