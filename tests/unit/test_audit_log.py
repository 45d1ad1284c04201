"""The customs audit log's group commit (gateway/customs/service.py AuditLog), on a fake store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.customs.service import AuditLog
from gateway.store.ledger import VerificationRecord


def _record(i: int) -> VerificationRecord:
    return VerificationRecord(
        id=f"v{i}", issuer="CH", number=f"N{i}", verdict="VALID", reasons=("ok",), principal="fr-customs",
        office=None, stamp_given=False, at=datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip


class _Store:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.committed: set[str] = set()
        self.fail_on = fail_on

    async def record_verifications(self, records) -> None:
        self.batches.append([r.id for r in records])
        await asyncio.sleep(0.01)  # the commit
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise OSError("disk full")
        self.committed.update(r.id for r in records)


async def test_callers_that_come_together_share_one_commit_and_are_answered_after_it():
    store = _Store()
    audit = AuditLog(store, batch=256)
    answered_before_commit = []

    async def verify(i: int) -> None:
        await audit.append(_record(i))
        if f"v{i}" not in store.committed:
            answered_before_commit.append(i)

    await asyncio.gather(*(verify(i) for i in range(32)))
    assert [len(b) for b in store.batches] == [32]
    assert sorted(sum(store.batches, [])) == sorted(f"v{i}" for i in range(32)) and not answered_before_commit


async def test_a_batch_is_never_larger_than_configured():
    store = _Store()
    audit = AuditLog(store, batch=5)
    await asyncio.gather(*(audit.append(_record(i)) for i in range(32)))
    assert max(len(b) for b in store.batches) == 5 and sum(len(b) for b in store.batches) == 32


async def test_every_caller_of_a_failed_commit_hears_of_it():
    store = _Store(fail_on=1)
    audit = AuditLog(store, batch=256)
    results = await asyncio.gather(*(audit.append(_record(i)) for i in range(8)), return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, OSError)]
    assert failed == list(range(8))  # all were in the failed transaction
    assert store.committed == set()
    await audit.append(_record(9))  # the log goes on
    assert store.committed == {"v9"}


async def test_a_cancelled_caller_s_record_is_still_written():
    store = _Store()
    audit = AuditLog(store, batch=256)
    task = asyncio.ensure_future(audit.append(_record(1)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await audit.append(_record(2))
    assert {"v1", "v2"} <= store.committed
