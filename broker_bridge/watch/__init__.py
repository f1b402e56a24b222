"""`hcp-bridge watch`: early warning (预警) from the devices' ratings, status, telemetry and
events. `rules` is the pure core; `service` is the thin MQTT adapter around it."""
