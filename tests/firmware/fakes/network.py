"""Fake `network`: WLAN interfaces that join the networks listed in `NETWORKS`; sockets stay real."""

STA_IF = 0
AP_IF = 1
NETWORKS: dict[str, str] = {}
STATE = {"ap_config": {}, "ap_active": False, "joined": None}


class WLAN:
    def __init__(self, iface) -> None:
        self.iface = iface
        self._active = False
        self._connected = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if self.iface == AP_IF:
            STATE["ap_active"] = self._active
        return None

    def config(self, **kw) -> None:
        if self.iface == AP_IF:
            STATE["ap_config"].update(kw)

    def connect(self, ssid, password) -> None:
        self._connected = NETWORKS.get(ssid) == password
        if self._connected:
            STATE["joined"] = ssid

    def isconnected(self) -> bool:
        return self._connected

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
