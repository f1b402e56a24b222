"""`hcp-sim fleet --cleanup` / `--cleanup-only`: clear the retained topics the virtual
devices of a load test leave at the broker (their `{"online": false}` status, and any
config), so that the watcher does not raise `device_silent` for them later and the
monitor does not list them. Uses `hcp-bridge forget`'s eraser: an empty retained message
per topic at QoS 1, each acknowledged by the broker."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker_bridge.config import MqttSettings
from broker_bridge.forget import BrokerError, clear_retained
from common.rating import DEVICE_ID_RE
from simulator.fleet_run import FleetOptions

# Per device two small messages; a broker on loopback acknowledges thousands a second.
BASE_TIMEOUT_S = 10.0
TIMEOUT_PER_DEVICE_S = 0.01


@dataclass
class CleanupResult:
    devices: int
    cleared: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.cleared == self.devices

    def summary(self) -> dict[str, object]:
        return {"devices": self.devices, "cleared": self.cleared,
                "problems": self.problems[:20]}

    def line(self) -> str:
        if self.ok:
            return (f"cleanup    retained status and config cleared for {self.cleared} "
                    "device(s)")
        first = self.problems[0] if self.problems else "not every device was cleared"
        return (f"cleanup    FAILED: {self.cleared} of {self.devices} device(s) cleared; "
                f"{first}" + (f" (and {len(self.problems) - 1} more)"
                              if len(self.problems) > 1 else ""))


def fleet_device_ids(device_prefix: str, devices: int) -> list[str]:
    """The fleet's ids, as simulator/fleet_run.Fleet.device_id makes them."""
    return [f"{device_prefix}-{index + 1:04d}" for index in range(devices)]


def cleanup(options: FleetOptions, timeout_s: float | None = None) -> CleanupResult:
    """Clear the retained status and config of the fleet's devices 1…`options.devices`
    under `options.prefix`; never raises for the broker's sake (the result says)."""
    ids = fleet_device_ids(options.device_prefix, options.devices)
    result = CleanupResult(len(ids))
    bad = [d for d in ids if not DEVICE_ID_RE.fullmatch(d)]
    if bad:
        # A slash or a wildcard in --device-prefix would aim at other topics.
        result.problems.append(f"{bad[0]!r} is not a device id ([A-Za-z0-9_-]{{1,64}}): "
                               "check --device-prefix; nothing was cleared")
        return result
    settings = MqttSettings(
        host=options.host, port=options.port, prefix=options.prefix, client_id="",
        shared_group="", keepalive_s=options.keepalive_s, session_expiry_s=0,
        receive_maximum=100, tls=False, ca_file="", client_cert="", client_key="",
        username=options.username, password_file=options.password_file,
        protocol=options.protocol)
    if timeout_s is None:
        timeout_s = BASE_TIMEOUT_S + TIMEOUT_PER_DEVICE_S * len(ids)
    try:
        problems = clear_retained(settings, ids, timeout_s)
    except BrokerError as e:
        result.problems.append(str(e))
        return result
    for device_id in ids:
        if problems[device_id]:
            result.problems.extend(problems[device_id])
        else:
            result.cleared += 1
    return result
