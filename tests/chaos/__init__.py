"""The chaos run: the whole chain (devices, mosquitto, two bridges, the reference
platform) as real processes, a stream of cases and presses, random faults, and a ledger
that must balance. `python -m tests.chaos --minutes 10`; see docs/reliability.md."""
