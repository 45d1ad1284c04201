"""The retention job: the ``[retention]`` policy turned into cutoffs and handed to the store's
purge, from ``epix purge`` or, every ``interval_s``, as a background task of ``epix serve``.

What goes and what never does is said in ``gateway/store/retention.py``; the store records every
run (``GET /v1/retention``). Logs carry counts and cutoffs, never a payload or a message id.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from domain.errors import EpixError, ErrorCode
from gateway.config import RetentionConfig
from gateway.logs import get_logger
from gateway.store.base import Store, utc_now
from gateway.store.retention import Category, Cutoffs, PurgeRun

log = get_logger("epix.retention")


def cutoffs(policy: RetentionConfig, now: datetime) -> Cutoffs:
    def before(days: int | None) -> datetime | None:
        return None if days is None else now - timedelta(days=days)

    return Cutoffs(
        messages=before(policy.message_days),
        payloads=before(policy.payload_days),
        idempotency_keys=before(policy.idempotency_days),
        verifications=before(policy.verification_days),
    )


async def purge(
    store: Store, policy: RetentionConfig, *, actor: str, now: datetime | None = None, dry_run: bool = False
) -> PurgeRun:
    """One run of the policy against the store (``now``: the instant the ages count back from)."""
    limits = cutoffs(policy, now or utc_now())
    started = time.perf_counter()
    run = await store.purge(limits, actor=actor, batch=policy.batch, dry_run=dry_run)
    log.info(
        "retention.dry_run" if dry_run else "retention.purged",
        run_id=run.run_id,
        actor=actor,
        batches=run.batches,
        ms=round((time.perf_counter() - started) * 1000, 1),
        **{f"{name}_before": None if at is None else at.isoformat() for name, at in _cutoff_items(limits)},
        **run.counts.as_dict(),
    )
    return run


def _cutoff_items(c: Cutoffs) -> list[tuple[str, datetime | None]]:
    return [(category.value, c.of(category)) for category in Category]


class RetentionWorker:
    """Runs the policy now and then every ``interval_s``; a failed run is logged and the next one
    comes at its time (what a run removes is durable batch by batch, so nothing is half-done)."""

    def __init__(self, policy: RetentionConfig, store: Store, *, party: str) -> None:
        self.policy = policy
        self.store = store
        self.actor = f"retention:{party}"

    async def run(self) -> None:
        while True:
            try:
                await purge(self.store, self.policy, actor=self.actor)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a purge that fails must not stop the gateway
                if isinstance(exc, EpixError) and exc.code is ErrorCode.CONFLICT:
                    # Another gateway process on the same PostgreSQL is purging: its run covers ours.
                    log.info("retention.skipped", actor=self.actor, reason=exc.detail)
                else:
                    log.warning("retention.failed", actor=self.actor, error=str(exc)[:300])
            await asyncio.sleep(self.policy.interval_s)


def run_view(run: PurgeRun) -> dict:
    """A run as the operator endpoint shows it."""
    return {
        "run_id": run.run_id,
        "actor": run.actor,
        "dry_run": run.dry_run,
        "started_at": run.started_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "error": run.error,
        "before": {name: None if at is None else at.isoformat() for name, at in _cutoff_items(run.cutoffs)},
        "removed": run.counts.as_dict(),
        "batches": run.batches,
    }


_WHAT = {
    "messages": ("message_days", "final messages last changed before {at}, with their history"),
    "events": (None, "events of those messages' history"),
    "payloads": ("payload_days", "payloads of final messages last changed before {at} (rows, digests, receipts, history kept)"),
    "idempotency_keys": ("idempotency_days", "idempotency keys given before {at}"),
    "verifications": ("verification_days", "customs verification audit rows from before {at}"),
}


def report_lines(run: PurgeRun, policy: RetentionConfig) -> list[str]:
    """What ``epix purge`` prints: one line per category, kept-forever ones included."""
    if run.dry_run:
        head = "dry run, nothing removed; a run now would remove:"
    else:
        head = f"retention run {run.run_id} ({run.batches} batches) removed:"
    lines = [head]
    limits = dict(_cutoff_items(run.cutoffs))
    for name, count in run.counts.as_dict().items():
        setting, sentence = _WHAT[name]
        at = limits.get(name, limits["messages"])
        if at is None:
            days = setting or "message_days"
            lines.append(f"  {name:<17} {'-':>8}  kept forever (no {days} in [retention])")
        else:
            suffix = f" ({setting} = {getattr(policy, setting)})" if setting else ""
            lines.append(f"  {name:<17} {count:>8}  {sentence.format(at=at.isoformat(timespec='seconds'))}{suffix}")
    return lines


def policy_view(policy: RetentionConfig) -> dict:
    return {
        "payload_days": policy.payload_days,
        "message_days": policy.message_days,
        "idempotency_days": policy.idempotency_days,
        "verification_days": policy.verification_days,
        "interval_s": policy.interval_s if policy.enabled else None,
        "batch": policy.batch,
    }
