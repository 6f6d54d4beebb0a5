"""Protocol v2: the gateway's codec (services/common/v2.py) and the device side every device runs
(services/common/v2device.py: the Pico's /lib/v2device.py and the simulator) against the vectors."""
import json
import random
from pathlib import Path

import pytest

from services.common import v1, v2, v2device

ROOT = Path(__file__).parents[2]
ALL = json.loads((ROOT / "tests" / "vectors" / "v2.json").read_text())
VECTORS = ALL["frames"]
H = bytes.fromhex


def keys_of(vec) -> v2.Keys:
    return v2.derive_keys(H(vec["master_key"]), H(vec["kid"]))


def device(vec, start=None):
    return v2device.Session(H(vec["master_key"]), H(vec["kid"]), v2device.MemoryCounter(start or vec["seq"]))


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_key_derivation_and_nonce_match_vectors_on_both_sides(vec):
    keys = keys_of(vec)
    derived = (keys.d2g.hex(), keys.g2d.hex(), keys.common_iv.hex())
    assert derived == (vec["key_d2g"], vec["key_g2d"], vec["common_iv"])
    assert v2.nonce(keys.common_iv, keys.kid, vec["seq"]).hex() == vec["nonce"]
    d2g, g2d, iv = v2device.derive(H(vec["master_key"]), H(vec["kid"]))
    assert (d2g, g2d, iv) == (keys.d2g, keys.g2d, keys.common_iv)
    assert v2device.nonce(iv, H(vec["kid"]), vec["seq"]).hex() == vec["nonce"]


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_device_frame_equals_vector_and_gateway_opens_it(vec):
    seq, frame = device(vec).seal(vec["plaintext"].encode())
    assert seq == vec["seq"] and frame.hex() == vec["frame"]
    keys = keys_of(vec)
    plaintext = vec["plaintext"].encode()
    sealed = v2device.seal_reading(keys.cipher("d2g"), keys.common_iv, keys.kid, vec["seq"], plaintext)
    assert sealed.hex() == vec["frame"]
    parsed, used = v2.read(frame)
    assert used == len(frame) and parsed.kid == H(vec["kid"]) and parsed.seq == vec["seq"]
    plain = v2.open_data(keys_of(vec), parsed)
    assert plain == vec["plaintext"].encode()
    assert v2.parse_reading(plain)["Temp"] == json.loads(vec["plaintext"])["Temp"]


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_gateway_ack_equals_vector_and_device_verifies_it(vec):
    ack = v2.seal_ack(keys_of(vec), vec["seq"])
    assert ack.hex() == vec["ack"]
    assert device(vec).read_answer(ack) == (v2.ACK, vec["seq"], 0, len(ack))
    frame, used = v2.read(ack, expect="ack")
    assert used == len(ack) and frame.seq == vec["seq"]


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_gateway_refusal_equals_vector_and_device_verifies_it(vec):
    keys = keys_of(vec)
    assert v2.nonce(keys.common_iv, keys.kid, vec["seq"], "refusal").hex() == vec["refusal_nonce"]
    refusal = v2.seal_refusal(keys, vec["seq"], vec["refusal_reason"])
    assert refusal.hex() == vec["refusal"]
    assert device(vec).read_answer(refusal) == (v2.REFUSAL, vec["seq"], vec["refusal_code"], len(refusal))
    assert v2device.reason_name(vec["refusal_code"]) == vec["refusal_reason"]
    # its nonce differs from the ack's (and the reading's) for the same kid and seq, in the first byte
    assert vec["refusal_nonce"] != vec["nonce"] and vec["refusal_nonce"][2:] == vec["nonce"][2:]


def test_refusal_nonces_never_meet_ack_nonces():
    """Over every kid length and seqs at the edges: the two nonce spaces under the g2d key are disjoint."""
    iv = H(VECTORS[1]["common_iv"])
    acks, refusals = set(), set()
    for k in range(1, 8):
        for kid in (bytes(k), bytes([0xFF] * k), bytes(range(1, k + 1))):
            for seq in (1, 2, 255, 256, 1 << 32, v2.SEQ_MAX):
                acks.add(v2device.nonce(iv, kid, seq))
                refusals.add(v2device.nonce(iv, kid, seq, v2.REFUSAL))
    assert not acks & refusals and len(refusals) == len(acks) == 7 * 3 * 6


def test_reason_codes_are_the_shared_table():
    assert ALL["refusal_codes"] == v2device.REASON_CODES
    for name, code in ALL["refusal_codes"].items():
        assert v2device.reason_code(name) == code and v2device.reason_name(code) == name
    assert v2device.reason_code("device_changed") == 255 and v2device.reason_name(42) == "refused"


@pytest.mark.parametrize("rec", ALL["counter"], ids=lambda r: str(r["ceiling"]))
def test_counter_records_match_vectors(rec):
    assert v2device.record(rec["ceiling"], rec["step"]) == rec["record"]
    assert v2device.parse_record(rec["record"].encode()) == (rec["ceiling"], rec["step"])


def test_ack_is_deterministic_and_direction_bound():
    vec = VECTORS[1]
    keys = keys_of(vec)
    assert v2.seal_ack(keys, 7) == v2.seal_ack(keys, 7)
    # a reading frame reflected back at the device is not an ack; an ack sent to the gateway is not a reading
    with pytest.raises(v2device.V2Error):
        device(vec).read_answer(H(vec["frame"]))
    with pytest.raises(v2.V2Error, match="bad_type"):
        v2.read(H(vec["ack"]))
    # another device's ack does not verify
    other = VECTORS[0]
    with pytest.raises(v2device.V2Error):
        device(vec).read_answer(v2.seal_ack(keys_of(other), 7))
    # an answer's type byte swapped: its length and its nonce no longer fit
    ack, refusal = H(vec["ack"]), H(vec["refusal"])
    for forged in (bytes([v2.REFUSAL]) + ack[1:], bytes([v2.ACK]) + refusal[1:],
                   bytes([v2.REFUSAL]) + ack[1:-10] + (9).to_bytes(2, "big") + ack[-8:] + b"\x06"):
        with pytest.raises(v2device.V2Error):
            device(vec).read_answer(forged)


def test_device_reads_acks_split_anywhere():
    vec = VECTORS[1]
    keys = keys_of(vec)
    stream = v2.seal_ack(keys, 5) + v2.seal_refusal(keys, 6, "out_of_range") + v2.seal_ack(keys, 9)
    dev, buf, got = device(vec), bytearray(), []
    for byte in stream:
        buf.append(byte)
        kind, seq, code, used = dev.read_answer(buf)
        if kind is not None:
            got.append((kind, seq, code))
            del buf[:used]
    assert got == [(v2.ACK, 5, 0), (v2.REFUSAL, 6, 6), (v2.ACK, 9, 0)] and not buf


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_every_single_bit_flip_is_rejected(vec):
    frame, keys = H(vec["frame"]), keys_of(vec)
    for i in range(len(frame) * 8):
        bad = bytearray(frame)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(v2.V2Error) as err:
            parsed, used = v2.read(bytes(bad))
            if parsed is None:
                raise v2.V2Error("truncated", "length grew past the buffer")
            if parsed.kid != keys.kid:
                raise v2.V2Error("unknown_kid", "key id changed")
            v2.open_data(keys, parsed)
        assert err.value.reason in {
            "bad_type", "bad_version", "bad_flags", "bad_kid_length", "bad_seq", "too_long", "too_short",
            "truncated", "unknown_kid", "bad_tag",
        }


@pytest.mark.parametrize("name", ["ack", "refusal"])
@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_every_single_bit_flip_of_an_answer_is_rejected_by_the_device(vec, name):
    answer = H(vec[name])
    for i in range(len(answer) * 8):
        bad = bytearray(answer)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(v2device.V2Error):
            kind, _, _, _ = device(vec).read_answer(bytes(bad))
            if kind is None:
                raise v2device.V2Error("truncated", "")


def test_truncated_frames_need_more_at_every_length():
    frame = H(VECTORS[1]["frame"])
    for n in range(len(frame)):
        assert v2.read(frame[:n]) == (None, 0)
    two = frame + frame
    parsed, used = v2.read(two)
    assert used == len(frame) and parsed.raw == frame


def _outcome(read, data, expect, max_body):
    try:
        return read(data, expect, max_body)
    except v2.V2Error as exc:
        return exc.reason


def _frames_and_variants():
    """Reading frames of every key id length, seqs at the edges of the header's two fields and
    bodies at the length limits, then each with every byte position set to edge values, cut at
    every length, and followed by more bytes."""
    rng = random.Random(13)
    for kid_len in range(v2.KID_MIN, v2.KID_MAX + 1):
        kid = bytes(rng.randrange(256) for _ in range(kid_len))
        for seq in (1, 255, 1 << 32, (1 << 32) - 1, v2.SEQ_MAX):
            for body_len in (v2.TAG + 1, 100, v2.MAX_BODY):
                frame = v2.build_header("data", kid, seq, body_len) + rng.randbytes(body_len)
                yield frame
                yield frame + frame[:7]
                for n in range(len(frame)):
                    yield frame[:n]
                for pos in range(min(len(frame), 4 + kid_len + v2.SEQ_BYTES + 2)):
                    for value in {0, 1, 2, 7, 8, 0xC2, 0xC3, 0xFF, frame[pos] ^ 1}:
                        bad = bytearray(frame)
                        bad[pos] = value
                        yield bytes(bad)


def test_read_takes_its_fast_path_only_where_the_full_checks_agree():
    """`read` unpacks a whole, well-formed reading frame at once and leaves everything else to the
    shared layout's checks (`_read`): the same frame, bytes used or reason for every input, every
    kind expected, several body limits, whatever the buffer type."""
    checked = 0
    for data in _frames_and_variants():
        for expect in ("data", "ack"):
            for max_body in (v2.MAX_BODY, 100):
                want = _outcome(v2._read, data, expect, max_body)
                for buf in (data, bytearray(data), memoryview(data)):
                    assert _outcome(v2.read, buf, expect, max_body) == want, (data.hex(), expect, max_body)
                    checked += 1
    assert checked > 100_000


def test_header_errors_have_their_own_reasons_before_the_body_arrives():
    vec = VECTORS[1]
    frame = bytearray(H(vec["frame"]))
    kid_len = frame[3]
    at_len = 4 + kid_len + v2.SEQ_BYTES
    cases = {
        "bad_type": (0, 0x7B),
        "bad_version": (1, 1),
        "bad_flags": (2, 0x80),
        "bad_kid_length": (3, 0),
    }
    for reason, (pos, value) in cases.items():
        bad = bytearray(frame)
        bad[pos] = value
        with pytest.raises(v2.V2Error) as err:
            v2.read(bytes(bad[:pos + 1]) if reason != "bad_kid_length" else bytes(bad[:4]))
        assert err.value.reason == reason
    oversize = bytearray(frame[:at_len + 2])
    oversize[at_len:at_len + 2] = (v2.MAX_BODY + 1).to_bytes(2, "big")
    with pytest.raises(v2.V2Error) as err:
        v2.read(bytes(oversize))  # only the header: refused without waiting for a body
    assert err.value.reason == "too_long"
    short = bytearray(oversize)
    short[at_len:at_len + 2] = v2.TAG.to_bytes(2, "big")
    with pytest.raises(v2.V2Error, match="too_short"):
        v2.read(bytes(short))
    zero = bytearray(frame)
    zero[4 + kid_len:at_len] = bytes(5)
    with pytest.raises(v2.V2Error, match="bad_seq"):
        v2.read(bytes(zero))


def test_first_byte_tells_v1_from_v2():
    for b in range(256):
        assert not (v1.is_v1_start(b) and v2.is_v2_start(b))
    assert v2.is_v2_start(H(VECTORS[0]["frame"])[0])


def test_wrong_key_and_bad_reading_text():
    vec = VECTORS[0]
    frame, _ = v2.read(H(vec["frame"]))
    other = v2.derive_keys(bytes(16), H(vec["kid"]))
    with pytest.raises(v2.V2Error, match="bad_tag"):
        v2.open_data(other, frame)
    keys = keys_of(vec)
    junk, _ = v2.read(v2device.seal_reading(keys.cipher("d2g"), keys.common_iv, keys.kid, 2, b"not json"))
    with pytest.raises(v2.V2Error) as err:
        v2.parse_reading(v2.open_data(keys, junk))
    assert err.value.reason == "not_json"


def test_file_counter_never_reuses_a_seq_across_reboots(tmp_path):
    path = str(tmp_path / "v2seq")
    used = []
    for boot in range(4):
        counter = v2device.FileCounter(path, step=10)
        used += [counter.take() for _ in range(7 + boot * 5)]  # crash after a varying number
    assert used == sorted(used) and len(set(used)) == len(used) and used[0] == 1
    # at most `step` numbers are skipped per boot (corrupt copies: tests/firmware/test_counter.py)
    assert used[-1] - len(used) <= 4 * 10
    assert v2device.parse_record(Path(path + ".0").read_bytes())[0] > used[-1]


def test_one_device_side_file():
    """The firmware, the simulator and the gateway share services/common/v2device.py: nobody keeps a copy."""
    lib = ROOT / "firmware" / "lib"
    assert not [p.name for p in lib.glob("*.py") if p.name in ("v2device.py", "v2device.py", "ccm.py")]
    assert "v2device.py" in (ROOT / "firmware" / "Makefile").read_text()
    sources = (ROOT / "services" / "sim" / "v2.py").read_text() + (lib / "proto_v2.py").read_text()
    assert "hkdf" not in sources and "ccm." not in sources  # no key derivation or cipher of their own


def test_replay_window_classifies_and_survives_a_restart():
    w = v2.ReplayWindow()
    assert w.classify(1) == "new"
    w.accept(1)
    w.accept(2)
    w.accept(5)  # 3 and 4 not seen yet (in flight, or skipped by a device reboot)
    assert w.ack(1) and w.ack(5)
    assert not w.ack(3) and not w.ack(9)
    assert [w.classify(s) for s in (1, 2, 3, 4, 5, 6)] == [
        "duplicate", "redelivery", "new", "new", "duplicate", "new"]
    restored = v2.ReplayWindow.from_text(w.to_text())
    assert [restored.classify(s) for s in range(1, 7)] == [w.classify(s) for s in range(1, 7)]
    restored.accept(5 + v2.ReplayWindow.WINDOW)
    assert restored.classify(5) == "old_seq" and restored.classify(6 + v2.ReplayWindow.WINDOW) == "new"
    with pytest.raises(ValueError):
        restored.accept(3)


def test_replay_window_acks_a_list_of_seqs_as_one_ack_each_would():
    """`ack_all` (the proxy's acks of one bus message) marks what `ack` seq by seq marks and names
    the seqs never verified, whatever the window and the seqs: ahead of it, inside it (verified
    or not, acked or not), at its edge, older than it, repeated, in any order."""
    n = v2.ReplayWindow.WINDOW
    rng = random.Random(11)
    for _ in range(3000):
        last = rng.choice([0, 1, 5, n - 1, n, 1000, v2.SEQ_MAX])
        verified = rng.getrandbits(n) | (1 if last else 0)
        acked = rng.getrandbits(n)
        seqs = [max(1, last + rng.randint(-n - 3, 3)) for _ in range(rng.randint(1, 20))]
        one_by_one = v2.ReplayWindow(last, verified, acked)
        never = [seq for seq in seqs if not one_by_one.ack(seq) and one_by_one.classify(seq) != "old_seq"]
        together = v2.ReplayWindow(last, verified, acked)
        assert together.ack_all(seqs) == never, (last, verified, acked, seqs)
        assert together.to_text() == one_by_one.to_text()


def test_replay_window_accepts_each_seq_inside_it_once_in_any_order():
    """Every order of arrival of the seqs of a window ends the same: each accepted once."""
    n = v2.ReplayWindow.WINDOW
    rng = random.Random(7)
    for _ in range(50):
        seqs = list(range(1000, 1000 + n))
        rng.shuffle(seqs)
        w = v2.ReplayWindow(999, 1)
        for seq in seqs:
            assert w.classify(seq) == "new", seq
            w.accept(seq)
            assert w.classify(seq) == "redelivery"
            with pytest.raises(ValueError):
                w.accept(seq)  # never twice
            assert w.ack(seq) and w.classify(seq) == "duplicate"
        assert (w.last, w.verified, w.acked) == (1000 + n - 1, (1 << n) - 1, (1 << n) - 1)
    # the edge of the window: last - 63 is inside it, last - 64 is not
    w = v2.ReplayWindow(100, 1)
    assert w.classify(100 - n + 1) == "new" and w.classify(100 - n) == "old_seq"
    w.accept(100 - n + 1)
    assert w.verified == 1 | 1 << (n - 1)
    with pytest.raises(ValueError):
        w.accept(100 - n)
    w.accept(101)  # the late seq slides out of the window with the rest
    assert w.classify(100 - n + 1) == "old_seq" and w.classify(101 - n + 1) == "new"
    assert w.to_text().startswith(f"101:{w.verified:x}:")  # what the key store's compare-and-set reads


def _answers_reference(data: bytes, frame: v2.Frame, kind: str) -> bool:
    """The proxy's check before is_answer_to: one whole answer frame of `kind` for frame's kid and seq."""
    try:
        answer, used = v2.read(data, expect=kind)
    except v2.V2Error:
        return False
    return answer is not None and used == len(data) and answer.kid == frame.kid and answer.seq == frame.seq


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["kid"])
def test_is_answer_to_agrees_with_reading_the_answer_for_every_change_of_it(vec):
    """The proxy checks auth's ack or refusal against the frame it answers by its header alone:
    every byte changed, every cut and every byte added must be judged as a full read judges it."""
    keys = keys_of(vec)
    frame, _ = v2.read(H(vec["frame"]))
    near = vec["seq"] - 1 if vec["seq"] > 1 else vec["seq"] + 1
    other, _ = v2.read(v2device.seal_reading(keys.cipher("d2g"), keys.common_iv, keys.kid, near, b"{}"))
    rng = random.Random(vec["seq"])
    for kind, good in (("ack", v2.seal_ack(keys, vec["seq"])),
                       ("refusal", v2.seal_refusal(keys, vec["seq"], "out_of_range"))):
        assert v2.is_answer_to(good, frame, kind) and good.startswith(v2.answer_header(frame, kind))
        assert not v2.is_answer_to(good, other, kind)  # a neighbouring seq's
        changed = [good[:i] + bytes([good[i] ^ (1 << rng.randrange(8))]) + good[i + 1:]
                   for i in range(len(good))]
        changed += [good[:i] for i in range(len(good))] + [good + b"\x00", good + good, H(vec["frame"])]
        changed += [v2.seal_ack(keys, vec["seq"]), v2.seal_refusal(keys, vec["seq"], "not_json")]
        for data in changed:
            assert v2.is_answer_to(data, frame, kind) == _answers_reference(data, frame, kind), data.hex()


def test_a_keys_nonce_and_ack_header_are_the_shared_constructions_for_every_kid_length_and_seq():
    """The gateway computes a key's nonce and ack header from per-key parts: the same bytes as
    v2device's nonce and header for key ids of 1 to 7 bytes and seqs across 1..SEQ_MAX."""
    rng = random.Random(13)
    for kid_len in range(v2.KID_MIN, v2.KID_MAX + 1):
        for _ in range(50):
            kid = bytes(rng.randrange(256) for _ in range(kid_len))
            keys = v2.derive_keys(bytes(rng.randrange(256) for _ in range(16)), kid)
            for seq in (1, 2, 255, 256, v2.SEQ_MAX - 1, v2.SEQ_MAX, rng.randrange(1, v2.SEQ_MAX)):
                assert keys.nonce(seq) == v2device.nonce(keys.common_iv, kid, seq)
                assert keys.ack_header(seq) == v2device.header(v2.ACK, kid, seq, v2.TAG)
    for seq in (0, -1, v2.SEQ_MAX + 1):
        with pytest.raises(v2.V2Error) as refused:
            v2.seal_ack(keys, seq)
        assert refused.value.reason == "bad_seq"
