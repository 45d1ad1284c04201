"""gateway/ids.py: pooled random ids are well-formed version-4 UUIDs and do not repeat."""

import uuid

from gateway.ids import new_hex, new_uuid


def test_new_uuid_is_a_version_4_uuid_in_canonical_text():
    for _ in range(1000):  # several pools' worth, across refills
        text = new_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat_across_pool_refills():
    ids = [new_uuid() for _ in range(20_000)] + [new_hex() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_new_hex_is_32_hex_digits():
    value = new_hex()
    assert len(value) == 32 and int(value, 16) >= 0
