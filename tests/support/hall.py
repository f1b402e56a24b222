"""Hall brokers bridged to a city broker live in simulator/hallbroker.py (the benchmarks
start them too); these names stay for the tests that import them from here."""

from simulator.hallbroker import SAMPLE, bridge_connected, hall_bridge_lines, hall_broker

__all__ = ["SAMPLE", "bridge_connected", "hall_bridge_lines", "hall_broker"]
