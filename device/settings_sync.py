"""The retained `config` topic as the loop sees it: settings from the broker validated
(device/remote_config.py), persisted in the outbox so they hold across restarts even
without a broker, and reported with `config_applied` / `config_rejected`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from device.core.settings import UiSettings
from device.faults import EventSink
from device.outbox import Outbox, StorageError
from device.remote_config import apply as apply_remote_config
from device.remote_config import parse_remote_config, too_large

log = logging.getLogger("hcp.device")

SETTING_KEY = "remote_config"


class RemoteSettings:
    """`base` is the config file's [ui]: the broker's settings go on top of it."""

    def __init__(self, base: UiSettings, outbox: Outbox, event: EventSink) -> None:
        self.base = base
        self.outbox = outbox
        self.event = event

    def stored(self) -> UiSettings:
        """The settings to start with: the file's, with the last accepted broker config."""
        stored = self.outbox.get_setting(SETTING_KEY)
        if not stored:
            return self.base
        parsed = parse_remote_config(json.dumps(stored).encode())
        if isinstance(parsed, list):
            log.error("ignoring stored remote config: %s", "; ".join(parsed))
            return self.base
        return apply_remote_config(self.base, parsed)

    def received(self, payload: bytes, current: UiSettings,
                 apply: Callable[[UiSettings], None], oversize: int = 0) -> None:
        """A message on the config topic (empty: back to the file's settings). `apply`
        hands new settings to the core; an unchanged result does nothing. `oversize`: the
        size of a message the link did not take in (refused, never read as empty)."""
        changes: dict[str, Any] | list[str] = {}
        if oversize:
            changes = too_large(oversize)
        elif payload.strip():
            changes = parse_remote_config(payload)
        if isinstance(changes, list):
            log.error("refusing config from the broker: %s", "; ".join(changes))
            self.event("config_rejected", {"problems": changes[:20]})
            return
        settings = apply_remote_config(self.base, changes)
        if settings == current:
            return
        try:
            self.outbox.put_setting(SETTING_KEY, changes or None)
        except StorageError as e:
            log.error("could not persist the config from the broker: %s", e)
        apply(settings)
        log.info("config from the broker applied: %s", sorted(changes) or "(cleared)")
        self.event("config_applied", {"keys": sorted(changes)})
