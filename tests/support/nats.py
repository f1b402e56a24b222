"""The three-node NATS cluster lives in simulator/natscluster.py (the benchmarks start it
too); these names stay for the tests that import them from here."""

from simulator.natscluster import NATS_SERVER, NatsCluster, NatsNode, nats_available

__all__ = ["NATS_SERVER", "NatsCluster", "NatsNode", "nats_available"]
