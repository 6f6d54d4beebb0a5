"""authwire.messages: the one loop every reader of the auth socket uses (auth, proxy, tests, benchmarks)."""
from __future__ import annotations

import itertools
import random

import pytest

from services.common import authwire

MESSAGES = [{"id": n, "op": "v1", "blocks": "ab" * n, "final": n % 2 == 0} for n in range(1, 8)]
STREAM = b"".join(authwire.encode(m) for m in MESSAGES)


@pytest.mark.parametrize("seed", range(20))
def test_a_stream_cut_anywhere_yields_each_message_once_in_order(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 12)))
    buf, got = bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(STREAM)], strict=True):
        buf += STREAM[start:end]
        got += authwire.messages(buf)
    assert got == MESSAGES and buf == b""


def test_every_split_point_leaves_the_partial_message_in_the_buffer():
    for split in range(len(STREAM) + 1):
        buf = bytearray(STREAM[:split])
        first = list(authwire.messages(buf))
        assert first == MESSAGES[:len(first)]
        buf += STREAM[split:]
        assert first + list(authwire.messages(buf)) == MESSAGES and buf == b""


def test_a_reader_that_stops_early_leaves_the_rest_in_place():
    buf = bytearray(STREAM)
    assert list(itertools.islice(authwire.messages(buf), 3)) == MESSAGES[:3]
    assert buf == b"".join(authwire.encode(m) for m in MESSAGES[3:])
    assert next(authwire.messages(buf)) == MESSAGES[3]


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x02[]", b"\x00\x00\x00\x03{x}", b"\xff\xff\xff\xff"])
def test_a_malformed_message_raises_after_the_good_ones_before_it(bad):
    buf = bytearray(authwire.encode(MESSAGES[0]) + bad)
    got = []
    with pytest.raises(authwire.AuthWireError):
        for message in authwire.messages(buf):
            got.append(message)
    assert got == [MESSAGES[0]]
