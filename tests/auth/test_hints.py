"""A device that reconnects from the address it was identified from is tried first (no pass over
every key), and identification finds exactly what the whole pass would (clashes included)."""
from __future__ import annotations

import random

from services.auth.identify import V1Keys, candidate, match
from services.common import v1
from services.keystore.models import Credential
from tests.auth.test_identify_batch import _block0
from tests.auth.test_v1_contest import add, service_on, text, unchecked, values, with_tail  # noqa: F401
from tests.auth.wire import encrypt

NOW = 1000.0


def _keys(rng: random.Random, n: int) -> tuple[V1Keys, list[tuple[str, str]]]:
    secrets = [(text(rng), text(rng)) for _ in range(n)]
    creds = [Credential(f"d{i}", "v1", 1, {"key": k, "iv": iv}, None, i % 5 == 0)
             for i, (k, iv) in enumerate(secrets)]
    # A clash from before the store's check: d1's key and IV head under another id.
    creds.append(Credential("twin", "v1", 1, {"key": secrets[1][0], "iv": with_tail(secrets[1][1], {12: 3})},
                            None, False))
    keys = V1Keys()
    keys.load(creds, True, NOW)
    return keys, secrets


def test_a_matching_hint_finds_what_the_pass_finds():
    rng = random.Random(21)
    keys, secrets = _keys(rng, 300)
    by_id = {c.device_id: c for c in keys.every}
    for i in range(40):
        block = _block0(*secrets[i], rng.choice(["chained", "per_block"]))
        other = by_id[f"d{(i + 1) % 40}"]
        found = keys.hinted(block, [other, by_id[f"d{i}"]])  # the right one second: still found
        assert found == match(keys.every, block)
    clash = keys.hinted(_block0(*secrets[1]), [by_id["d1"]])
    assert [c.device_id for c in clash] == ["d1", "twin"]  # the twin too: the reading decides


def test_no_hint_or_a_stale_one_means_the_whole_pass():
    rng = random.Random(22)
    keys, secrets = _keys(rng, 50)
    block = _block0(*secrets[3])
    assert keys.hinted(block, []) is None
    assert keys.hinted(block, [c for c in keys.every if c.device_id == "d4"]) is None
    stale = candidate(Credential("d3", "v1", 1, {"key": secrets[3][0], "iv": secrets[3][1]}, None, False),
                      True, False)  # not the loaded object (a reload replaced it)
    assert keys.hinted(block, [stale]) is None


def _ask(service, conn: int, wire: bytes, src: str) -> dict:
    request = {"id": conn, "op": "v1", "conn": conn, "src": src,
               "blocks": wire.decode().replace("+", ""), "final": False}
    return service.handle(request, "proxy")


def test_a_device_reconnecting_from_its_address_is_identified_by_its_hint(store):
    rng = random.Random(23)
    secrets = {f"dev-{n}": (text(rng), text(rng)) for n in range(30)}
    for device, (key, iv) in secrets.items():
        add(store, device, key, iv)
    service = service_on(store)
    plain = v1.format_reading(values(rng))
    wire = {d: encrypt(k, iv, plain) for d, (k, iv) in secrets.items()}
    assert _ask(service, 1, wire["dev-3"], "10.0.0.5:4000")["device"] == "dev-3"
    assert service.metrics.hinted == 0
    assert _ask(service, 2, wire["dev-3"], "10.0.0.5:4001")["device"] == "dev-3"
    assert service.metrics.hinted == 1  # same address, new connection: no pass
    assert _ask(service, 3, wire["dev-4"], "10.0.0.5:4002")["device"] == "dev-4"  # the hint misses
    assert _ask(service, 4, wire["dev-3"], "10.0.0.6:4000")["device"] == "dev-3"  # another address
    assert service.metrics.hinted == 1
    store.revoke("dev-3")
    service.refresh(force=True)  # another process's change in production (data_version moves)
    answer = _ask(service, 5, wire["dev-3"], "10.0.0.5:4003")
    assert (answer["status"], answer["reason"]) == ("rejected", "revoked")  # as the whole pass says
    assert service.metrics.hinted == 2
    batch = ["dev-4", "dev-7", "dev-3", "dev-8", "dev-9"]
    requests = [{"id": n, "op": "v1", "conn": 10 + n, "src": "10.0.0.5:5000", "final": False,
                 "blocks": wire[d].decode().replace("+", "")} for n, d in enumerate(batch)]
    pre = service.identify_batch(requests, "proxy")
    assert [[c.device_id for c in p.matches] for p in pre] == [[d] for d in batch]
    assert service.metrics.hinted == 4  # dev-4 and dev-3 from their hints, the others in one pass
    answers = [service.handle(r, "proxy", p) for r, p in zip(requests, pre, strict=True)]
    assert [(a["status"], a.get("device")) for a in answers] == [
        ("ok", "dev-4"), ("ok", "dev-7"), ("rejected", "dev-3"), ("ok", "dev-8"), ("ok", "dev-9")]


def test_a_hint_with_a_clash_still_lets_the_reading_decide(unchecked):  # noqa: F811
    rng = random.Random(24)
    key, iv = text(rng), text(rng)
    add(unchecked, "p", key, iv)
    add(unchecked, "q", key, with_tail(iv, {15: 1}))
    service = service_on(unchecked)
    plain = v1.format_reading(values(rng))
    assert _ask(service, 1, encrypt(key, iv, plain), "10.1.1.1:1")["device"] == "p"
    answer = _ask(service, 2, encrypt(key, with_tail(iv, {15: 1}), plain), "10.1.1.1:2")
    assert (answer["status"], answer["device"]) == ("ok", "q")  # p's hint matched block 0; q decoded
    assert service.metrics.hinted == 1
    assert _ask(service, 3, encrypt(key, iv, plain), "10.1.1.1:3")["device"] == "p"  # q's hint: same group
    assert service.metrics.hinted == 2
