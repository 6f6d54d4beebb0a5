"""Seed workflow 2: sealed parameter files for the stations of a line.

See the README, "Sealed parameter distribution", and docs/envelope.md.
"""
