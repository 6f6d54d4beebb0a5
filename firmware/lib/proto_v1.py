# Work-mode protocol adapter for v1: encode and send; v1 has no acknowledgement,
# so a reading whose send fails is gone (v2 keeps it).
import v1codec


class V1Link:
    name = "v1"

    def __init__(self, settings):
        self.key = settings.secret_bytes("v1_key")
        self.iv = settings.secret_bytes("v1_iv")
        self.variant = settings.get("variant") or "chained"
        if len(self.key) != 16 or len(self.iv) != 16:
            raise ValueError("v1_key and v1_iv must be 16 characters: run medsec device provision")

    def reading(self, values):
        """Frames to send now for one new reading."""
        return [v1codec.encode_reading(self.key, self.iv, values, self.variant)]

    def connected(self):
        """Frames to send again after a reconnect."""
        return []

    def received(self, data):
        pass

    def lost(self):
        """The link ended (v1 keeps nothing to give up on)."""

    def pending(self):
        return 0

    def stalled(self, now, timeout_ms):
        return False  # nothing is ever answered under v1
