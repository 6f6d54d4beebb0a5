"""Key handling of the dispatch service: generation, the server's pair on disk, registration checks."""
from __future__ import annotations

import pytest

from services.common import envelope
from services.common.state import write_secret
from services.dispatch import keys as dkeys


def test_generated_keys_are_private_rsa_of_the_asked_size():
    key = dkeys.generate_key(2048)  # 3072 is the default (and the minimum a station may register)
    assert key.has_private() and key.size_in_bits() == 2048


def test_server_key_is_kept_private_and_its_public_half_published(config, keys):
    dkeys.dispatch_dir(config).mkdir(parents=True)
    write_secret(dkeys.server_key_path(config), envelope.private_pem(keys["dispatch"]))
    key = dkeys.load_or_create_server_key(config)
    assert key.n == keys["dispatch"].n
    assert dkeys.load_server_public(config).n == key.n and not dkeys.load_server_public(config).has_private()
    dkeys.server_key_path(config).chmod(0o644)
    with pytest.raises(Exception, match="0600"):
        dkeys.load_or_create_server_key(config)
