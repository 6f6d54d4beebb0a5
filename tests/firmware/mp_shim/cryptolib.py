# ruff: noqa: B905  (MicroPython: zip() takes no strict flag)
# cryptolib for the MicroPython WebAssembly port, which has none: AES-128 in
# pure MicroPython with cryptolib's interface (aes(key, mode[, iv]); 1 ECB, 2 CBC).
# Test support only; slow and not constant time.


def _mul(a, b):
    p = 0
    while b:
        if b & 1:
            p ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else (a << 1)
        b >>= 1
    return p


def _sbox():
    s = [0] * 256
    inv = [0] * 256
    for x in range(256):
        y = 0
        if x:
            for c in range(1, 256):
                if _mul(x, c) == 1:
                    y = c
                    break
        r = y
        v = y
        for _ in range(4):
            r = ((r << 1) | (r >> 7)) & 0xFF
            v ^= r
        v ^= 0x63
        s[x] = v
        inv[v] = x
    return s, inv


SBOX, INV = _sbox()


def _expand(key):
    w = list(key)
    rcon = 1
    while len(w) < 176:
        t = w[-4:]
        if len(w) % 16 == 0:
            t = [SBOX[t[1]] ^ rcon, SBOX[t[2]], SBOX[t[3]], SBOX[t[0]]]
            rcon = _mul(rcon, 2)
        for i in range(4):
            w.append(w[-16] ^ t[i])
    return [w[i:i + 16] for i in range(0, 176, 16)]


def _mix(s, m):
    out = [0] * 16
    for c in range(4):
        col = s[4 * c:4 * c + 4]
        for r in range(4):
            out[4 * c + r] = (_mul(col[0], m[(0 - r) % 4]) ^ _mul(col[1], m[(1 - r) % 4])
                              ^ _mul(col[2], m[(2 - r) % 4]) ^ _mul(col[3], m[(3 - r) % 4]))
    return out


def _shift(s, d):
    return [s[(4 * (c + d * r) + r) % 16] for c in range(4) for r in range(4)]


def _enc(rk, block):
    s = [b ^ k for b, k in zip(block, rk[0])]
    for rnd in range(1, 11):
        s = _shift([SBOX[b] for b in s], 1)
        if rnd < 10:
            s = _mix(s, (2, 3, 1, 1))
        s = [b ^ k for b, k in zip(s, rk[rnd])]
    return bytes(s)


def _dec(rk, block):
    s = [b ^ k for b, k in zip(block, rk[10])]
    for rnd in range(9, -1, -1):
        s = [INV[b] for b in _shift(s, -1)]
        s = [b ^ k for b, k in zip(s, rk[rnd])]
        if rnd > 0:
            s = _mix(s, (14, 11, 13, 9))
    return bytes(s)


class aes:
    def __init__(self, key, mode, iv=None):
        if len(key) != 16 or mode not in (1, 2):
            raise ValueError("shim supports AES-128 ECB and CBC")
        self.rk = _expand(key)
        self.mode = mode
        self.iv = bytes(iv) if mode == 2 else None

    def encrypt(self, data):
        out = b""
        for i in range(0, len(data), 16):
            block = data[i:i + 16]
            if self.mode == 2:
                block = bytes([a ^ b for a, b in zip(block, self.iv)])
            c = _enc(self.rk, block)
            if self.mode == 2:
                self.iv = c
            out += c
        return out

    def decrypt(self, data):
        out = b""
        for i in range(0, len(data), 16):
            block = data[i:i + 16]
            p = _dec(self.rk, block)
            if self.mode == 2:
                p = bytes([a ^ b for a, b in zip(p, self.iv)])
                self.iv = block
            out += p
        return out
