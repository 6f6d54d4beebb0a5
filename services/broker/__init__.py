"""The local Mosquitto broker: its generated config and the dynamic-security logins and rights."""


class BrokerError(Exception):
    """The broker cannot be set up or told about an account change; the message says why."""
