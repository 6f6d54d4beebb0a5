"""The v1 codec against the independently produced vectors (tests/vectors/v1.json)."""
import json
import random
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common import v1

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "v1.json").read_text())["readings"]


def ecb(key: str):
    return AES.new(key.encode(), AES.MODE_ECB)


def decode_stream(stream: bytes, key: str, iv: str, variant: str, chunks: list[int]) -> list[bytes]:
    """Feed the stream in the given chunk sizes, decoding readings as a gateway would."""
    cipher, out, buf, pos = ecb(key), [], bytearray(), 0
    for size in chunks:
        buf += stream[pos:pos + size]
        pos += size
        while (found := v1.scan(buf)) is not None:
            plain = v1.decrypt(cipher, iv.encode(), found.blocks, variant)
            if not found.final and not v1.ends_with_padding(plain):
                break  # not over yet: wait for more bytes
            out.append(v1.strip_padding(plain))
            del buf[:found.consumed]
    assert not buf
    return out


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"{v['variant']}-{len(v['plaintext'])}")
def test_every_vector_decodes_to_its_plaintext(vec):
    found = v1.scan(vec["wire"].encode())
    assert found is not None and found.consumed == len(vec["wire"])
    plain = v1.decrypt(ecb(vec["key"]), vec["iv"].encode(), found.blocks, vec["variant"])
    assert v1.strip_padding(plain) == vec["plaintext"].encode()


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"{v['variant']}-{len(v['plaintext'])}")
def test_encoder_reproduces_every_vector(vec):
    wire = v1.encrypt(ecb(vec["key"]).encrypt, vec["iv"].encode(), vec["plaintext"].encode(), vec["variant"])
    assert wire == vec["wire"].encode()


def _streams():
    """Per (key, iv, variant): all the vectors' readings written back to back."""
    groups: dict[tuple, list] = {}
    for vec in VECTORS:
        groups.setdefault((vec["key"], vec["iv"], vec["variant"]), []).append(vec)
    return list(groups.items())


@pytest.mark.parametrize("group", _streams(), ids=lambda g: f"{g[0][0]}-{g[0][2]}")
def test_byte_at_a_time_random_splits_and_one_write_agree(group):
    (key, iv, variant), vecs = group
    stream = b"".join(v["wire"].encode() for v in vecs)
    expected = [v["plaintext"].encode() for v in vecs]
    rng = random.Random(7)
    random_chunks = []
    while sum(random_chunks) < len(stream):
        random_chunks.append(rng.randint(1, 300))
    assert decode_stream(stream, key, iv, variant, [1] * len(stream)) == expected
    assert decode_stream(stream, key, iv, variant, random_chunks) == expected
    assert decode_stream(stream, key, iv, variant, [len(stream)]) == expected


def test_reading_is_complete_without_the_next_one_starting():
    vec = VECTORS[0]
    found = v1.scan(vec["wire"].encode())
    assert found is not None and found.final is False
    plain = v1.decrypt(ecb(vec["key"]), vec["iv"].encode(), found.blocks, vec["variant"])
    assert v1.ends_with_padding(plain)


def test_partial_block_needs_more():
    wire = VECTORS[0]["wire"].encode()
    for cut in (1, 31, 32 + 1, 33, 40):
        assert v1.scan(wire[:cut]) is None


def test_block_followed_by_plus_is_not_a_candidate():
    wire = VECTORS[0]["wire"].encode()
    assert v1.scan(wire[:33]) is None  # "<block>+" waits for the next block


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"zz" + b"0" * 30, "not_hex"),
        (b"0" * 31 + b"g", "not_hex"),
        (b"0" * 20 + b"+" + b"0" * 11, "bad_block_length"),
        (b"0" * 32 + b"++" + b"0" * 32, "bad_separator"),
    ],
)
def test_malformed_input_raises_with_reason(data, reason):
    with pytest.raises(v1.V1Error) as err:
        v1.scan(data)
    assert err.value.reason == reason


def test_too_many_blocks():
    data = b"+".join([b"00" * 16] * 5) + b"+"
    with pytest.raises(v1.V1Error) as err:
        v1.scan(data, max_blocks=4)
    assert err.value.reason == "too_long"


@pytest.mark.parametrize("tail", [b"", b"0"])  # over for certain, or maybe (the fast and the slow path)
def test_a_reading_scans_to_one_text_whatever_the_case_of_its_hex(tail):
    """The proxy recognises a replay by the scanned text: the same blocks in upper case (or mixed)
    must give the same, or a replayer would only need to change the case."""
    wire = VECTORS[0]["wire"].encode()
    lower, upper = v1.scan(wire.lower() + tail), v1.scan(wire.upper() + tail)
    mixed_case = bytes(c ^ 0x20 if i % 3 == 0 and c > 0x60 else c for i, c in enumerate(wire.lower()))
    mixed = v1.scan(mixed_case + tail)
    assert lower.hex == upper.hex == mixed.hex == wire.lower().replace(b"+", b"")
    assert b"".join(lower.blocks) == b"".join(upper.blocks) == bytes.fromhex(lower.hex.decode())
    assert v1._scan_block_by_block(wire.upper() + tail, 64) == lower


def test_identification_uses_first_block_for_both_variants():
    for vec in VECTORS[:2]:
        found = v1.scan(vec["wire"].encode())
        assert v1.first_block_matches(ecb(vec["key"]), vec["iv"].encode(), found.blocks[0])
        assert not v1.first_block_matches(ecb("AAAAAAAAAAAAAAAB"), vec["iv"].encode(), found.blocks[0])


def test_detect_variant():
    for vec in VECTORS:
        if len(vec["plaintext"]) == 125:
            blocks = v1.scan(vec["wire"].encode()).blocks
            assert v1.detect_variant(ecb(vec["key"]), vec["iv"].encode(), blocks) == vec["variant"]


def test_parse_plaintext_errors():
    good = json.loads(VECTORS[0]["plaintext"])
    assert v1.parse_plaintext(VECTORS[0]["plaintext"].encode()) == good
    with pytest.raises(v1.V1Error, match="not_json"):
        v1.parse_plaintext(b'{"Temp":')
    with pytest.raises(v1.V1Error, match="missing_field"):
        v1.parse_plaintext(b'{"Temp":"36.600"}')
    renamed = {("temp" if k == "Temp" else k): v for k, v in good.items()}  # seven keys, one wrong
    with pytest.raises(v1.V1Error, match="missing_field"):
        v1.parse_plaintext(json.dumps(renamed).encode())
    with pytest.raises(v1.V1Error, match="unknown_field"):
        v1.parse_plaintext(json.dumps({**good, "temp": "1"}).encode())
    for wrong in (36.6, None, True, ["36.6"]):
        with pytest.raises(v1.V1Error, match="not_string"):
            v1.parse_plaintext(json.dumps({**good, "Temp": wrong}).encode())


def _reference_parse(obj: object) -> dict[str, str]:
    """parse_plaintext's rule, field by field, as it was first written (for the test below)."""
    if not isinstance(obj, dict):
        raise v1.V1Error("not_json", "")
    if any(f not in obj for f in v1.FIELDS):
        raise v1.V1Error("missing_field", "")
    if any(k not in v1.FIELDS for k in obj):
        raise v1.V1Error("unknown_field", "")
    if any(not isinstance(obj[f], str) for f in v1.FIELDS):
        raise v1.V1Error("not_string", "")
    return {f: obj[f] for f in v1.FIELDS}


# What JSON (and orjson: 64-bit integers, finite floats) can carry as a field's value.
_FIELD_VALUE = st.one_of(st.text(max_size=6), st.integers(-2**63, 2**63 - 1), st.none(), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.lists(st.text(max_size=2), max_size=1))


@settings(max_examples=2000, deadline=None)
@given(st.fixed_dictionaries({f: st.just("1.5") | st.text(max_size=6) | _FIELD_VALUE for f in v1.FIELDS},
                             optional={"Extra": _FIELD_VALUE, "temp": _FIELD_VALUE}),
       st.sets(st.sampled_from(v1.FIELDS), max_size=2) | st.just(set()),
       st.booleans())
def test_parse_plaintext_takes_and_refuses_what_the_rule_says(fields: dict, left_out: set,
                                                              array: bool) -> None:
    """The one-check path for a good reading against the rule: same values, or the same reason."""
    obj = list(fields.values()) if array else {k: v for k, v in fields.items() if k not in left_out}
    text = json.dumps(obj).encode()
    try:
        expected = _reference_parse(json.loads(text))
    except v1.V1Error as exc:
        with pytest.raises(v1.V1Error) as err:
            v1.parse_plaintext(text)
        assert err.value.reason == exc.reason
    else:
        assert v1.parse_plaintext(text) == expected


def test_format_reading_matches_firmware_text():
    values = {"Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": 0.0, "Acel_y": 0.0,
              "Acel_z": 0.0, "TempMpu": 23.4}
    assert v1.format_reading(values).decode() == VECTORS[0]["plaintext"]
    assert b'"Acel_x":"-0.12"' in v1.format_reading({**values, "Acel_x": -0.12})


_BLOCK_HEX = st.text("0123456789abcdefABCDEF", min_size=32, max_size=32).map(str.encode)
_TOKEN = st.one_of(
    _BLOCK_HEX, _BLOCK_HEX, _BLOCK_HEX, st.just(b"+"), st.just(b"\n"),
    st.text("0123456789abcdef", min_size=1, max_size=31).map(str.encode),  # a block cut short
    st.binary(min_size=1, max_size=2),  # anything at all
)


@settings(max_examples=2000)
@given(st.lists(_TOKEN, max_size=12).map(b"".join), st.integers(1, 6),
       st.sampled_from([bytes, bytearray, memoryview]))
def test_scan_agrees_with_the_block_by_block_reference(data, max_blocks, kind) -> None:
    """The one-pass scan (issue 13) gives what the block-by-block loop gives, errors included."""
    def outcome(fn):
        try:
            return fn(kind(data), max_blocks)
        except v1.V1Error as exc:
            return ("error", exc.reason)
    assert outcome(v1.scan) == outcome(v1._scan_block_by_block)
