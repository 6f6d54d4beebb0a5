"""medsec: secure telemetry gateway for wearable medical sensors."""
