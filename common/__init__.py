"""What every program of the product shares: the wire contract (serial codec, rating
record, topics, exit codes) and service plumbing (config schema, sd_notify, backoff,
start-up). It imports nothing else of ours, so each program may import it."""

__version__ = "0.1.0"
