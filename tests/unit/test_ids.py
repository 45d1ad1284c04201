"""gateway/ids.py: pooled ids are well-formed version-4 (random) or version-7 (time-ordered) UUIDs and do not repeat."""

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


def test_new_uuid7_is_a_version_7_uuid_that_sorts_by_time():
    import time

    from gateway.ids import new_uuid7

    before = time.time_ns() // 1_000_000
    ids = [new_uuid7() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= int(text.replace("-", "")[:12], 16) <= after  # its first 48 bits: Unix milliseconds
    stamps = [i[:13] for i in ids]
    assert stamps == sorted(stamps) and len(set(ids)) == len(ids)
