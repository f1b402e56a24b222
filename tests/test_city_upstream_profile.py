"""`[upstream_profile]`: the bridge's gov-profile overrides for `hcp-platform`'s upstream
(docs/platform.md "Upstream"). Checked by the bridge's own `profile_problems` (a bad
override is a config error naming the key, exit 78); used for our records and for those
that came in gov names, posted to a real HTTP server on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.profile import GovProfile
from city_platform.config import load
from city_platform.store import Store
from city_platform.upstream import Upstream
from city_platform.upstream_profile import GovRecords
from common.configschema import ConfigError
from common.service import EX_CONFIG
from tests.support.bridge import REPO
from tests.support.ratings import make_rating
from tests.test_profile import CapturingPlatform

OVERRIDES = """
[upstream]
url = "{url}"
profile = "gov"
retry_cap_s = 0.5

[upstream_profile]
timezone = "UTC"

[upstream_profile.fields]
assessId = "evaluateId"
projectNo = "bjbh"
clockSynced = ""

[upstream_profile.values.satisfaction]
5 = "1"
4 = "2"
3 = "3"
2 = "4"
1 = "5"

[upstream_profile.values.pf]
button = 7

[upstream_profile.values.evalDetail]
R02 = "502"

[upstream_profile.constants]
appId = "HCP-421100"
"""


@pytest.fixture
def province() -> Iterator[CapturingPlatform]:
    """A real HTTP server on loopback keeping what it is sent; it answers by evaluateId."""
    p = CapturingPlatform("evaluateId")
    yield p
    p.close()


def write(tmp_path: Path, text: str, store: str = "") -> Path:
    path = tmp_path / "platform.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "city.db"}"\n{store}' + text,
                    encoding="utf-8")
    return path


def test_the_overrides_reach_the_province_for_every_record(
        tmp_path: Path, province: CapturingPlatform) -> None:
    config = load(str(write(tmp_path, OVERRIDES.format(url=province.url))))
    store = Store.open(config.store_url, config.timezone, upstream=True)
    upstream = Upstream(store, config.upstream)
    try:
        ours = make_rating("421100-HG01-W03", level=5, rated_at="2026-11-25T02:31:07.125Z",
                           input="button")
        bad = make_rating("421100-HG01-W03", level=2, rated_at="2026-11-25T03:00:00.000Z")
        # A record that came in the gov profile's default names (a bridge with
        # profile = "gov"): its assessTime is local time in [store] timezone.
        came_as_gov = GovProfile().rating(make_rating("421100-HG02-W01", level=4,
                                                      rated_at="2026-11-25T04:00:00Z"))
        store.submit([ours, bad, came_as_gov])
        upstream.start()
        deadline = time.monotonic() + 20
        while store.upstream_counts() != {"accepted": 3}:
            assert time.monotonic() < deadline, store.upstream_counts()
            time.sleep(0.05)
    finally:
        upstream.stop()
        store.close()
    by_id = {r["evaluateId"]: r for r in province.records()}
    assert set(by_id) == {ours["rating_id"], bad["rating_id"], came_as_gov["assessId"]}
    for record in by_id.values():
        assert "assessId" not in record and "clockSynced" not in record
        assert record["appId"] == "HCP-421100" and "bjbh" in record
    mine = by_id[ours["rating_id"]]
    assert (mine["satisfaction"], mine["pf"], mine["assessTime"]) == (
        "1", 7, "2026-11-25 02:31:07")              # reversed, renumbered, in UTC
    assert (by_id[bad["rating_id"]]["satisfaction"],
            by_id[bad["rating_id"]]["evalDetail"]) == ("4", "502")
    gov = by_id[came_as_gov["assessId"]]
    assert (gov["satisfaction"], gov["pf"], gov["assessTime"], gov["bjbh"]) == (
        "2", 7, "2026-11-25 04:00:00", came_as_gov["projectNo"])


@pytest.mark.parametrize("text,named", [
    ('[upstream_profile.fields]\nassesId = "x"\n',
     "[upstream_profile.fields] assesId: not a field of the gov table"),
    ('[upstream_profile.fields]\nassessId = ""\n',
     "[upstream_profile.fields] assessId: cannot be left out"),
    ('[upstream_profile.values.satisfaction]\n5 = "1"\n',
     "[upstream_profile.values.satisfaction]: two levels would have the same value"),
    ('[upstream_profile.values.pf]\nkeypad = "7"\n',
     "[upstream_profile.values.pf] keypad: not one of our values"),
    ('[upstream_profile.constants]\nsatisfaction = "5"\n',
     "[upstream_profile.constants] satisfaction: the table already has this field"),
    ('[upstream_profile]\ntimezone = "Mars/Olympus"\n', "[upstream_profile] timezone:"),
    ('[upstream_profile]\nfields = 3\n', "[upstream_profile] fields: must be a table"),
    ('[upstream_profile]\nzone = "UTC"\n', "[upstream_profile] zone: unknown key"),
    ('[upstream]\nprofile = "generic"\n[upstream_profile]\ntimezone = "UTC"\n',
     '[upstream_profile]: only used with [upstream] profile = "gov"'),
])
def test_a_bad_override_is_a_config_error_naming_the_key(tmp_path: Path, text: str,
                                                         named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(str(write(tmp_path, text)))
    assert any(named in p for p in caught.value.problems), caught.value.problems


def test_hcp_platform_run_exits_78_on_a_bad_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstream_profile.fields]\nassesId = "x"\n')
    done = subprocess.run([sys.executable, "-m", "city_platform", "run", "--config",
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == EX_CONFIG, done.stderr
    assert "[upstream_profile.fields] assesId: not a field of the gov table" in done.stderr


def test_without_overrides_the_timezone_is_the_stores(tmp_path: Path) -> None:
    config = load(str(write(tmp_path, "", store='timezone = "Asia/Urumqi"\n')))
    assert config.upstream["profile_overrides"] == {
        "fields": {}, "values": {}, "constants": {}, "timezone": "Asia/Urumqi"}


# A gov record re-mapped to the overrides is exactly our record mapped with them --------

NAMES = st.sampled_from(["assessId", "projectNo", "taskName", "satisfaction", "pf",
                         "assessTime", "evalDetail", "handleUserName", "clockSynced"])
OVERRIDE_SETS = st.fixed_dictionaries({
    "fields": st.dictionaries(NAMES, st.sampled_from(["", "a1", "b_2", "evaluateId", "X"]),
                              max_size=3),
    "values": st.fixed_dictionaries({}, optional={
        "satisfaction": st.permutations(["1", "2", "3", "4", "5"]).map(
            lambda p: dict(zip(["1", "2", "3", "4", "5"], p, strict=True))),
        "pf": st.dictionaries(st.sampled_from(["button", "touch"]),
                              st.integers(0, 9) | st.text("0123456789", min_size=1,
                                                          max_size=2), max_size=2),
        "evalDetail": st.dictionaries(st.sampled_from(["R01", "R02", "R03"]),
                                      st.sampled_from(["501", "502", 9]), max_size=2),
        "assessType": st.fixed_dictionaries({"rated": st.sampled_from(["1", "R", 1])}),
    }),
    "constants": st.dictionaries(st.sampled_from(["appId", "source"]),
                                 st.text(max_size=5) | st.integers(), max_size=2),
    "timezone": st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York",
                                 "Asia/Kolkata"]),
})
RECORDS = st.builds(
    lambda level, reason, input_, minute, spontaneous: make_rating(
        "421100-HG01-W03", level=level, reason=reason, input=input_,
        rated_at=f"2026-0{1 + minute % 9}-1{minute % 10}T{minute % 24:02d}:{minute % 60:02d}"
                 ":07.125Z",
        trigger="spontaneous" if spontaneous else "case",
        **({"case": None} if spontaneous else {})),
    st.integers(1, 5), st.sampled_from([None, "R01", "R02", "R04"]),
    st.sampled_from(["button", "touch"]), st.integers(0, 10_000), st.booleans())


@settings(max_examples=300, deadline=None)
@given(overrides=OVERRIDE_SETS, record=RECORDS)
def test_a_gov_record_remapped_equals_our_record_mapped(overrides: dict[str, Any],
                                                        record: dict[str, Any]) -> None:
    try:
        wanted = GovProfile(overrides["fields"], overrides["values"], overrides["constants"],
                            overrides["timezone"]).rating(record)
    except ValueError:   # overrides the bridge refuses (two fields with one name)
        return
    came_as_gov = GovProfile().rating(record)     # default table, Asia/Shanghai
    remapped = GovRecords(overrides, ZoneInfo("Asia/Shanghai")).record(came_as_gov)
    assert remapped == wanted
    # With no overrides and the same zone, a gov record goes up as it came.
    same = {"fields": {}, "values": {}, "constants": {}, "timezone": "Asia/Shanghai"}
    assert GovRecords(same, ZoneInfo("Asia/Shanghai")).record(came_as_gov) == came_as_gov
