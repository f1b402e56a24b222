"""`hcp-platform run --config platform.toml`: the platform in the foreground — HTTP
ingest and API, the store, follow-up alerts, the hall dashboard and the upstream to the
province — for systemd or a shell."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from city_platform.config import PlatformConfig, load
from city_platform.server import PlatformServer
from city_platform.store import Store, StoreError, TimezoneMismatch
from common.service import EX_CANTCREAT, EX_CONFIG, load_config, run_service, setup_logging

log = logging.getLogger("hcp.platform")


class Platform:
    """Everything `run` starts, stopped in reverse order."""

    def __init__(self, config: PlatformConfig, store: Store, server: PlatformServer) -> None:
        self.config = config
        self.store = store
        self.server = server
        self.parts: list[tuple[str, Callable[[], None]]] = []  # (name, stop)
        self._stop = threading.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, on_tick: Callable[[], None], tick_s: float) -> None:
        http = threading.Thread(target=self.server.serve_forever, name="platform-http",
                                daemon=True)
        http.start()
        while not self._stop.wait(tick_s):
            on_tick()
        log.info("stopping")
        self.server.shutdown()
        self.close()

    def close(self) -> None:
        """Stop the parts (the hall's loop, the MQTT follower, the upstream feed), then
        close the listening socket and the store: a part still running would find the
        store closed under it. The HTTP server must not be serving any more."""
        for name, stop in reversed(self.parts):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - stopping the rest matters more
                log.warning("stopping %s: %s", name, e)
        self.server.close()
        self.store.close()


def build(config: PlatformConfig) -> Platform:
    """Open the store and the listening socket (raises StoreError, OSError, ssl.SSLError)."""
    store = Store.open(config.store_url, config.timezone, config.calendar, config.policy,
                       upstream=bool(config.upstream.get("url")))
    try:
        token = (Path(config.token_file).read_text(encoding="utf-8").strip()
                 if config.token_file else None)
        from city_platform.hall import Hall  # the dashboard's state

        hall = Hall(store, config)
        server = PlatformServer(config.host, config.port, store, config.path, token,
                                config.max_batch,
                                Path(config.tls_cert) if config.tls_cert else None,
                                Path(config.tls_key) if config.tls_key else None,
                                chaos=config.chaos, hall=hall,
                                max_connections=config.max_connections,
                                head_timeout_s=config.head_timeout_s)
    except BaseException:
        store.close()
        raise
    platform = Platform(config, store, server)
    server.on_stored.append(hall.changed)
    hall.start(platform)
    if config.upstream.get("url"):
        from city_platform.upstream import Upstream

        upstream = Upstream(store, config.upstream)
        upstream.start()
        server.on_stored.append(upstream.wake)
        platform.parts.append(("upstream", upstream.stop))
    return platform


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-platform run",
        description="The city's aggregation platform (评价汇聚平台) in the foreground.")
    parser.add_argument("--config", required=True, metavar="FILE", help="platform.toml")
    args = parser.parse_args(argv)
    config = load_config(load, args.config, "hcp-platform")
    if isinstance(config, int):
        return config
    setup_logging()
    try:
        platform = build(config)
    except TimezoneMismatch as e:
        print(f"hcp-platform: {args.config}: [store] timezone: {e}", file=sys.stderr)
        return EX_CONFIG
    except StoreError as e:
        print(f"hcp-platform: [store] url: {e}", file=sys.stderr)
        return EX_CANTCREAT
    except (OSError, ssl.SSLError) as e:
        print(f"hcp-platform: [http] listen {config.listen}: {e}", file=sys.stderr)
        return EX_CONFIG if isinstance(e, ssl.SSLError) else 1
    log.info("hcp-platform: %s, store %s, timezone %s%s", platform.server.url,
             platform.store.db.describe(), config.timezone,
             f", upstream {config.upstream['url']}" if config.upstream.get("url") else "")
    return run_service(platform, f"listening on {platform.server.base_url}")
