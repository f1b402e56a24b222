"""The MQTT → platform bridge (SPEC §3, §7, §9): `hcp-bridge run --config FILE`."""
