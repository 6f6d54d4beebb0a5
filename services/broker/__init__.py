"""The local Mosquitto broker: its generated config, passwords and ACL."""
