"""Hall brokers bridged to a city broker, both real mosquittos on free loopback ports in
temp folders, the halls configured from the sample systemd/examples/hall-bridge.conf
(only the address, the ids and the per-device lines replaced — so the sample is what is
tested). For the broker-topology tests and the benchmarks, from a checkout (the sample is
not in the wheel).

    city = mosquitto_factory()
    hall = hall_broker(tmp_path / "hall-1", city, "421100-HG01", device_ids).start()
    # devices publish to hall.port; the bridge subscribes at city.port
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.localbroker import Mosquitto

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "systemd" / "examples" / "hall-bridge.conf"
SAMPLE_HALL = "HALL"
DEVICE_LINE = re.compile(r"^topic hcp/v1/[A-Za-z0-9_-]+/(receipt|config) in 1$")


def hall_bridge_lines(city: Mosquitto, hall: str, device_ids: Sequence[str],
                      sample: Path = SAMPLE) -> list[str]:
    """The sample's lines for this hall: comments dropped, `address` pointing at `city`,
    HALL replaced by `hall`, one receipt and one config line per device."""
    lines = []
    for raw in sample.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or DEVICE_LINE.match(line):
            continue
        if line.startswith("address "):
            line = f"address {city.host}:{city.port}"
        lines.append(line.replace(SAMPLE_HALL, hall))
    for device_id in device_ids:
        lines += [f"topic hcp/v1/{device_id}/receipt in 1",
                  f"topic hcp/v1/{device_id}/config in 1"]
    return lines


def hall_broker(workdir: Path, city: Mosquitto, hall: str, device_ids: Sequence[str],
                **options: Any) -> Mosquitto:
    """A hall mosquitto (not started) bridged to `city` as the sample says; `options` are
    more of Mosquitto's fields (e.g. `max_queued_messages`, `autosave_interval`)."""
    return Mosquitto(workdir, extra_conf=hall_bridge_lines(city, hall, device_ids), **options)


def bridge_connected(city: Mosquitto, hall_id: str) -> bool:
    """True once the city's log shows this hall's bridge connected after its last start."""
    log = city.log_text()
    starts = log.rfind("mosquitto version")
    return f"as hcp-hall-{hall_id} " in log[starts:]
