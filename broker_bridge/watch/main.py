"""`hcp-bridge watch --config FILE`: the early-warning watcher in the foreground, for
systemd or a shell (exit 78 on a bad config, SIGTERM/SIGINT stop it within 5 s)."""

from __future__ import annotations

import logging
import sys

from broker_bridge.mqtt_link import LinkError
from broker_bridge.watch.config import load_watch_config
from broker_bridge.watch.service import WatchService
from broker_bridge.watch.state import StateError
from common.service import (
    EX_CONFIG,
    EX_SOFTWARE,
    config_from_command_line,
    run_service,
    setup_logging,
)

log = logging.getLogger("hcp.watch")


def main(argv: list[str]) -> int:
    config = config_from_command_line(
        "hcp-bridge watch", "Raise early-warning alerts on {prefix}/alerts from the devices' "
                    "ratings, status, telemetry and events.",
        "watch.toml", load_watch_config, argv)
    if isinstance(config, int):
        return config
    setup_logging(config.log_level)
    try:
        service = WatchService(config)
    except (LinkError, StateError) as e:
        print(f"{config.path}: {e}", file=sys.stderr)
        return EX_CONFIG

    log.info("watcher %s: %s:%s %s/+/{rating,status,telemetry,event} -> %s/alerts%s; "
             "state %s", config.mqtt.client_id, config.mqtt.host, config.mqtt.port,
             config.mqtt.prefix, config.mqtt.prefix,
             f" and {config.watch.webhook_url}" if config.watch.webhook_url else "",
             config.watch.state_file)
    run_service(service)
    if service.failed:
        return EX_SOFTWARE  # a thread died: systemd restarts us
    log.info("watcher stopped (%d open alerts kept for the next start)",
             len(service.watcher.open))
    return 0
