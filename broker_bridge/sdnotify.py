"""The systemd notify protocol, shared with the device daemon (device/sdnotify.py)."""

from device.sdnotify import WatchdogPinger, notify, stop_on_signals, watchdog_interval

__all__ = ["WatchdogPinger", "notify", "stop_on_signals", "watchdog_interval"]
