"""`hcp-bridge watch --config FILE`: the early-warning watcher in the foreground, for
systemd or a shell (exit 78 on a bad config, SIGTERM/SIGINT stop it within 5 s)."""

from __future__ import annotations

import argparse
import logging
import sys

from broker_bridge import sdnotify
from broker_bridge.mqtt_link import LinkError
from broker_bridge.watch.config import load_watch_config
from broker_bridge.watch.service import WatchService
from broker_bridge.watch.state import StateError
from device.configschema import ConfigError

EXIT_CONFIG = 78
log = logging.getLogger("hcp.watch")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-bridge watch",
        description="Raise early-warning alerts on {prefix}/alerts from the devices' "
                    "ratings, status, telemetry and events.")
    parser.add_argument("--config", required=True, metavar="FILE", help="watch.toml")
    args = parser.parse_args(argv)
    try:
        config = load_watch_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = WatchService(config)
    except (LinkError, StateError) as e:
        print(f"{config.path}: {e}", file=sys.stderr)
        return EXIT_CONFIG

    sdnotify.stop_on_signals(service.request_stop)
    pinger = sdnotify.WatchdogPinger()
    on_tick = pinger.tick

    log.info("watcher %s: %s:%s %s/+/{rating,status,telemetry,event} -> %s/alerts%s; "
             "state %s", config.mqtt.client_id, config.mqtt.host, config.mqtt.port,
             config.mqtt.prefix, config.mqtt.prefix,
             f" and {config.watch.webhook_url}" if config.watch.webhook_url else "",
             config.watch.state_file)
    sdnotify.notify("READY=1")
    service.run(on_tick)
    log.info("watcher stopped (%d open alerts kept for the next start)",
             len(service.watcher.open))
    return 0
