"""Helpers shared by the test suite: a private mosquitto, a test CA, the reference platform."""
