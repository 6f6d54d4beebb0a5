# Legacy (v1) reading codec, device side. MicroPython subset: runs on the Pico,
# under CPython (host tests) and under the MicroPython WebAssembly port (tests).
# Pure: values in, bytes out; the only dependency is cryptolib (AES-ECB/CBC).
import binascii

import cryptolib

FIELDS = ("Temp", "TempMcu", "PulseSig", "Acel_x", "Acel_y", "Acel_z", "TempMpu")
BLOCK = 16
_ECB = 1
_CBC = 2


def format_value(name, value):
    # The original firmware prints negative accelerations with 2 decimals and
    # everything else with 3, so the text keeps its length.
    if name[:5] == "Acel_" and value < 0:
        return "%.2f" % value
    return "%.3f" % value


def format_reading(values):
    """The reading text exactly as v1 devices build it (keys in order, values as strings)."""
    parts = []
    for name in FIELDS:
        parts.append('"%s":"%s"' % (name, format_value(name, values[name])))
    return ("{" + ",".join(parts) + "}").encode()


def pad(plaintext):
    # '&' up to the next block boundary; a full block of '&' when already aligned.
    return plaintext + b"&" * (BLOCK - len(plaintext) % BLOCK)


def _xor(a, b):
    out = bytearray(a)
    for i in range(len(out)):
        out[i] ^= b[i]
    return bytes(out)


def encrypt_blocks(key, iv, plaintext, variant="chained"):
    """AES-128-CBC over the '&'-padded reading: the list of 16-byte ciphertext blocks.

    chained: one CBC context for the whole reading (the firmware's variant).
    per_block: CBC restarted with the same IV for every block (the original simulator's).
    """
    data = pad(plaintext)
    if variant == "chained":
        ct = cryptolib.aes(key, _CBC, iv).encrypt(data)
        return [ct[i:i + BLOCK] for i in range(0, len(ct), BLOCK)]
    if variant != "per_block":
        raise ValueError("unknown variant")
    ecb = cryptolib.aes(key, _ECB)
    return [ecb.encrypt(_xor(data[i:i + BLOCK], iv)) for i in range(0, len(data), BLOCK)]


def encode(key, iv, plaintext, variant="chained"):
    """What the device writes to TCP for one reading: hex blocks joined by '+'."""
    return b"+".join([binascii.hexlify(b) for b in encrypt_blocks(key, iv, plaintext, variant)])


def encode_reading(key, iv, values, variant="chained"):
    return encode(key, iv, format_reading(values), variant)
