"""Fake `cryptolib`: MicroPython's interface (aes(key, mode[, iv]); 1 ECB, 2 CBC) on pycryptodome."""

from Crypto.Cipher import AES


class aes:  # noqa: N801 (MicroPython's name)
    def __init__(self, key, mode, iv=None) -> None:
        if mode == 1:
            self._c = AES.new(bytes(key), AES.MODE_ECB)
        elif mode == 2:
            self._c = AES.new(bytes(key), AES.MODE_CBC, iv=bytes(iv))
        else:
            raise ValueError("mode")

    def encrypt(self, data):
        return self._c.encrypt(bytes(data))

    def decrypt(self, data):
        return self._c.decrypt(bytes(data))
