"""The project's own driver exceptions: adapters turn library errors into these."""


class DriverError(Exception):
    """A driver could not do its job; the message says what and what to check."""


class HardwareNotFound(DriverError):
    """The configured hardware is missing (no I²C bus, no GPIO, no input device, no font)."""
