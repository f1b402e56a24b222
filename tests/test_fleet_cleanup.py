"""`hcp-sim fleet --cleanup` and `--cleanup-only` against a real mosquitto: a fleet run
leaves each virtual device's retained `{"online": false}` status behind (the watcher's
later `device_silent` alerts, the monitor's extra rows); with --cleanup none is left
for its ids, and another device's retained status is untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator import fleet
from simulator.fleet_cleanup import cleanup, fleet_device_ids
from simulator.fleet_run import Fleet, FleetOptions
from tests.support.bridge import BridgeProcess
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.platform import RunningPlatform
from tests.test_forget import PREFIX, retained
from tests.test_watch_mqtt import Devices

BYSTANDER = "421100-HG01-W03"


def broker_arg(broker: Mosquitto) -> str:
    return f"{broker.host}:{broker.port}"


def statuses(broker: Mosquitto, ids: list[str]) -> dict[str, bytes]:
    return {t: p for t, p in retained(broker, ids).items() if t.endswith("/status")}


def with_bystander(broker: Mosquitto) -> None:
    devices = Devices(broker)
    devices.publish(BYSTANDER, "status", {"online": True}, retain=True)
    devices.close()


def test_a_fleet_run_with_cleanup_leaves_no_retained_status(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        capsys: pytest.CaptureFixture[str]) -> None:
    with_bystander(mosquitto)
    ids = fleet_device_ids("CLN", 6)
    with BridgeProcess(tmp_path / "bridge", mosquitto, platform.url).start():
        code = fleet.main(["--devices", "6", "--count", "6", "--rate", "50", "--quiet",
                           "--broker", broker_arg(mosquitto), "--device-prefix", "CLN",
                           "--drain-timeout", "30", "--json", "--cleanup"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0, (summary, err[-2000:])
    assert summary["receipted"] == 6
    assert summary["cleanup"] == {"devices": 6, "cleared": 6, "problems": []}
    assert platform.control.counts()["by_device"] == {d: 1 for d in ids}
    assert statuses(mosquitto, [*ids, BYSTANDER]) == {
        f"{PREFIX}/{BYSTANDER}/status": b'{"online":true}'}


def test_cleanup_only_clears_what_an_earlier_run_left(
        mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    """Also with workers, and whether or not that run was a success (no bridge here)."""
    with_bystander(mosquitto)
    ids = fleet_device_ids("OLD", 4)
    code = fleet.main(["--devices", "4", "--count", "4", "--rate", "50", "--quiet",
                       "--broker", broker_arg(mosquitto), "--device-prefix", "OLD",
                       "--drain-timeout", "0.5", "--workers", "2"])
    assert code == 1   # nothing receipted without a bridge
    left = statuses(mosquitto, ids)
    assert sorted(left) == [f"{PREFIX}/{d}/status" for d in ids]
    assert all(json.loads(p)["online"] is False for p in left.values())
    capsys.readouterr()

    code = fleet.main(["--cleanup-only", "--devices", "4", "--device-prefix", "OLD",
                       "--broker", broker_arg(mosquitto)])
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        "cleanup    retained status and config cleared for 4 device(s)")
    assert statuses(mosquitto, [*ids, BYSTANDER]) == {
        f"{PREFIX}/{BYSTANDER}/status": b'{"online":true}'}


def test_cleanup_names_what_it_could_not_do(
        mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    # A slash in the prefix would aim at other topics: refused, nothing published.
    bad = cleanup(FleetOptions(devices=2, device_prefix="hcp/v1/x", host=mosquitto.host,
                               port=mosquitto.port))
    assert not bad.ok and bad.cleared == 0 and "check --device-prefix" in bad.problems[0]
    code = fleet.main(["--cleanup-only", "--devices", "2", "--json",
                       "--broker", f"127.0.0.1:{free_port()}"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["ok"] is False
    assert "cannot reach 127.0.0.1" in summary["cleanup"]["problems"][0]


def test_the_cleanup_uses_the_fleets_own_id_scheme() -> None:
    options = FleetOptions(devices=12, device_prefix="421100-HG09")
    made = Fleet(options)
    assert fleet_device_ids("421100-HG09", 12) == [made.device_id(i) for i in range(12)]
