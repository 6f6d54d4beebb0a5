"""Seed workflow 2: sealed parameter files for the stations of a line (docs/readme/dispatch.md)."""
