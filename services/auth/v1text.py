"""What the blocks of a v1 reading can be, under each credential and variant still in question.

Pure functions over the blocks auth is asked about. A v1 device sends JSON text
padded with '&' (protocol v1.md), so every byte of every block decrypts to
printable ASCII (0x20-0x7E) under the device's key, IV and variant; a block
that does not is garbage, refused when it arrives (`not_printable`) rather than
when the reading times out. The same test tells the variants apart (the wrong
one turns block 1 onwards into random bytes) and narrows the credentials a
first block matched to those the reading can belong to.
"""
from __future__ import annotations

from typing import NamedTuple

from services.auth.identify import Candidate
from services.common import v1

# Every byte a v1 reading's text and padding may hold: JSON text is printable ASCII ('&' included).
PRINTABLE = bytes(range(0x20, 0x7F))


class Reading(NamedTuple):  # not a frozen dataclass: built per reading, in a third of the time
    """The blocks decrypted under one credential and variant: every byte printable so far."""

    cand: Candidate
    variant: v1.Variant
    plain: bytes

    @property
    def padded(self) -> bool:
        """The last block ends in '&': the reading may end here."""
        return v1.ends_with_padding(self.plain)


def first_bad_block(plain: bytes) -> int | None:
    """The index of the first block holding a byte no v1 reading holds; None if there is none."""
    if not plain.translate(None, PRINTABLE):
        return None
    bad = next(i for i, b in enumerate(plain) if not 0x20 <= b < 0x7F)
    return bad // v1.BLOCK


def variant_order(cand: Candidate, blocks: tuple[bytes, ...]) -> tuple[v1.Variant, v1.Variant]:
    """Both variants, the one block 1 reads as text under first (wrong: (95/256)^16 chance)."""
    if len(blocks) >= 2:
        raw = cand.ecb.decrypt(blocks[1])
        if raw.translate(None, PRINTABLE) and not v1._xor(raw, cand.iv).translate(None, PRINTABLE):
            return ("per_block", "chained")
    return ("chained", "per_block")


def readable(contenders: list[Candidate], blocks: tuple[bytes, ...],
             variant: v1.Variant | None) -> tuple[list[Reading], int]:
    """The (credential, variant) pairs under which every block is printable, and, when there is
    none, the block at which the last of them failed (the connection is refused there)."""
    found: list[Reading] = []
    failed_at = 0
    for cand in contenders:
        for each in (variant,) if variant else variant_order(cand, blocks):
            plain = v1.decrypt(cand.ecb, cand.iv, blocks, each)
            bad = first_bad_block(plain)
            if bad is None:
                found.append(Reading(cand, each, plain))
            else:
                failed_at = max(failed_at, bad)
    return found, failed_at
