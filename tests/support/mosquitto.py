"""The private broker for tests lives in simulator/localbroker.py (the demo and the chaos
runner use it too); this name stays for the tests that import it from here."""

from simulator.localbroker import (
    HOST,
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    BrokerError,
    Mosquitto,
    TestCA,
    free_port,
    wait_for_port,
)

__all__ = ["HOST", "MOSQUITTO", "MOSQUITTO_PASSWD", "BrokerError", "Mosquitto", "TestCA",
           "free_port", "wait_for_port"]
