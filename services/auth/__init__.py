"""The auth service: the only process that reads device keys (identify, decrypt, validate)."""
