"""History: a subscriber on the published readings that stores them (raw and per-minute aggregates)."""
