"""Identifiers (message ids, verification ids, request ids) from the OS's CSPRNG.

Version-4 UUIDs as ``uuid.uuid4()`` makes them, but drawn 256 at a time from one ``os.urandom``
call instead of one system call and one ``UUID`` object each: on a busy event loop, that was a
measurable share of a verification's and of an exchange's time. Not for secrets (tokens, keys):
ids are public, only unpredictable and unique.
"""

from __future__ import annotations

import os
import time

_POOL_BYTES = 4096


class _Pool:
    def __init__(self) -> None:
        self._pool = bytearray()
        self._at = 0

    def take16(self) -> bytearray:
        if self._at >= len(self._pool):
            self._pool, self._at = bytearray(os.urandom(_POOL_BYTES)), 0
        at, self._at = self._at, self._at + 16
        return self._pool[at : at + 16]

    def uuid(self) -> str:
        raw = self.take16()
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def uuid7(self) -> str:
        """RFC 9562 version 7: the Unix time in milliseconds, then 74 random bits. Ids made
        later sort later, so a table keyed by them grows at its end: an insert dirties the last
        index page, not a random one of thousands (each a page written to the WAL and again at
        the checkpoint)."""
        raw = self.take16()
        raw[0:6] = (time.time_ns() // 1_000_000).to_bytes(6, "big")
        raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def hex(self) -> str:
        return self.take16().hex()


_pool = _Pool()
# Both run on the event loop's thread only (no lock: the loop never runs two at once).
new_uuid = _pool.uuid  # "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", as str(uuid.uuid4())
new_uuid7 = _pool.uuid7  # "tttttttt-tttt-7xxx-yxxx-xxxxxxxxxxxx", time-ordered to the millisecond
new_hex = _pool.hex  # 32 hex digits, as uuid.uuid4().hex (random bits only)
