"""The `medsec` command line."""
