"""The systemd notify protocol, shared with the device daemon (device/sdnotify.py)."""

from device.sdnotify import notify, watchdog_interval

__all__ = ["notify", "watchdog_interval"]
