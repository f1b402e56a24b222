"""`hcp-bridge run --config FILE`: the bridge in the foreground, for systemd or a shell."""

from __future__ import annotations

import logging
import sys

from broker_bridge.bridge import Bridge
from broker_bridge.config import load_bridge_config
from broker_bridge.http_endpoint import EndpointError, StatusEndpoint
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import LinkError
from broker_bridge.platform_client import PlatformError
from common.service import (
    EX_CONFIG,
    EX_SOFTWARE,
    config_from_command_line,
    run_service,
    settle_heap,
    setup_logging,
)

log = logging.getLogger("hcp.bridge")


def main(argv: list[str]) -> int:
    config = config_from_command_line(
        "hcp-bridge run", "Forward ratings from the MQTT broker to the aggregation platform.",
        "bridge.toml", load_bridge_config, argv)
    if isinstance(config, int):
        return config
    setup_logging(config.log_level)

    metrics = BridgeMetrics()
    try:
        bridge = Bridge(config, metrics)
    except (LinkError, PlatformError) as e:
        print(f"{config.path}: {e}", file=sys.stderr)
        return EX_CONFIG
    try:
        endpoint = StatusEndpoint(config.listen_host, config.listen_port, metrics.render,
                                  lambda: bridge.healthy)
    except EndpointError as e:
        print(f"{config.path}: [http] listen: {e}", file=sys.stderr)
        return 1

    endpoint.start()
    settle_heap()
    log.info("bridge %s: %s:%s %s -> %s (batch %d / %d ms, %d workers); /metrics on %s:%d",
             config.mqtt.client_id, config.mqtt.host, config.mqtt.port,
             bridge.subscriptions()[0][0], config.platform.url, config.platform.batch_max,
             config.platform.batch_wait_ms, config.platform.concurrency,
             config.listen_host, endpoint.port)
    try:
        run_service(bridge)
    finally:
        endpoint.stop()
    if bridge.failed:
        return EX_SOFTWARE  # a worker died: systemd restarts us
    log.info("bridge stopped")
    return 0
