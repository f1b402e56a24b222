"""The daemon config `hcp-sim device` starts the real `hcp-device` with: the user's file
(or a demo window's) with the sim keys, screen and voice, the built-in window system's
serial link and the broker options swapped in. A change of what the simulator
overrides lands here; the terminal UI is simulator/device_sim.py's."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from simulator.tomlfile import toml_text

__all__ = ["build_config", "write_config"]


def write_config(path: Path, base: dict[str, Any]) -> None:
    path.write_text(toml_text(base), encoding="utf-8")


def build_config(args: argparse.Namespace, data_dir: Path, serial_url: str) -> dict[str, Any]:
    """The daemon's config: the user's file (if any) with sim keys, sim screen and the
    built-in window system swapped in."""
    if args.config:
        with open(args.config, "rb") as f:
            conf: dict[str, Any] = tomllib.load(f)
    else:
        conf = {
            "device": {"id": args.device_id, "region_code": "421100", "hall_id": "HG01",
                       "window_id": args.device_id.rsplit("-", 1)[-1],
                       "window_name": args.window_name},
            "ui": {"spontaneous_min_interval_s": 10},
        }
    conf.setdefault("device", {})["data_dir"] = str(data_dir)
    conf["serial"] = {**conf.get("serial", {}), "port": serial_url, "reopen_s": 0.5}
    conf["input"] = {"kind": "sim"}
    display = conf.get("display", {})
    conf["display"] = {**{k: v for k, v in display.items()
                          if k in ("font", "size", "staff_photos_dir")}, "kind": "sim"}
    if display.get("kind") == "framebuffer":  # a colour panel's config: show it in colour
        conf["display"]["size"] = "800x480"
    if args.size:  # a colour panel (SPEC §10): 480x320, 800x480, 1024x600, …
        conf["display"]["size"] = args.size
    conf.pop("indicators", None)
    # The voice as sim events (SPEC §10): shown, and played here where there is a card.
    conf["voice"] = {**{k: v for k, v in conf.get("voice", {}).items()
                        if k in ("volume", "read_levels", "clips_dir")}, "kind": "sim"}
    mqtt = conf.setdefault("mqtt", {})
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        mqtt.update(host=host or "127.0.0.1", port=int(port))
    if args.prefix:
        mqtt["prefix"] = args.prefix
    mqtt.setdefault("telemetry_s", 10)
    conf.setdefault("clock", {}).setdefault("assume_synced", True)
    return conf


