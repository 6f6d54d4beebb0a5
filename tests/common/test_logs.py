"""Log lines: key=value fields, and a storm of one warning (one per request while the key store is
away) kept to one line a second that counts the rest."""
from __future__ import annotations

import logging

from services.common.logs import Throttled, kv


def test_values_with_spaces_quotes_or_equals_are_quoted():
    assert kv(event="x", error='it said "no" a=b', n=3, empty="") == \
        "event=x error=\"it said 'no' a=b\" n=3 empty=\"\""


def test_a_storm_is_one_line_a_second_that_counts_what_it_left_out(caplog):
    now = [10.0]
    warn = Throttled(logging.getLogger("medsec.test"), seconds=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for i in range(500):
            warn.warning(event="keystore_unavailable", client=i % 3)
        now[0] += 1.0
        warn.warning(event="keystore_unavailable", client=1)
        now[0] += 5.0
        warn.warning(event="keystore_unavailable", client=2)
    assert [r.getMessage() for r in caplog.records] == [
        "event=keystore_unavailable client=0",
        "event=keystore_unavailable client=1 left_out=499",
        "event=keystore_unavailable client=2",
    ]
