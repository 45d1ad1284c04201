"""The retention job: the ``[retention]`` policy turned into cutoffs and handed to the store's
purge, from ``epix purge`` or, every ``interval_s``, as a background task of ``epix serve``.

What goes and what never does is said in ``gateway/store/retention.py``; the store records every
run (``GET /v1/retention``). Logs carry counts and cutoffs, never a payload or a message id.

What this gateway's customs pre-arrival feed has yet to hand over is kept (``feed_hold``): the
``[customs]`` table says whether there is a feed and from when it hands permits over.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.errors import EpixError, ErrorCode
from gateway.config import RetentionConfig
from gateway.logs import get_logger
from gateway.store.base import Store, utc_now
from gateway.store.retention import NO_FEED, Category, Cutoffs, FeedHold, PurgeRun

if TYPE_CHECKING:
    from gateway.customs.config import CustomsConfig

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


def feed_hold(customs: "CustomsConfig | None") -> FeedHold:
    """What a run keeps for the pre-arrival feed. Without a feed nothing is: its queue (filled as
    permits arrive, feed or not) would otherwise keep every inbound permit message forever."""
    if customs is None or not customs.feed_enabled:
        return NO_FEED
    return FeedHold(since=customs.feed_since)


async def purge(
    store: Store,
    policy: RetentionConfig,
    *,
    actor: str,
    customs: "CustomsConfig | None",
    now: datetime | None = None,
    dry_run: bool = False,
) -> PurgeRun:
    """One run of the policy against the store (``now``: the instant the ages count back from);
    ``customs``: the gateway's [customs] table, for what its feed has yet to hand over."""
    limits = cutoffs(policy, now or utc_now())
    started = time.perf_counter()
    run = await store.purge(limits, actor=actor, batch=policy.batch, dry_run=dry_run, feed=feed_hold(customs))
    log.info(
        "retention.dry_run" if dry_run else "retention.purged",
        run_id=run.run_id,
        actor=actor,
        batches=run.batches,
        ms=round((time.perf_counter() - started) * 1000, 1),
        **{f"{name}_before": None if at is None else at.isoformat() for name, at in _cutoff_items(limits)},
        **run.counts.as_dict(),
        kept_for_feed=run.kept_for_feed,
    )
    if run.kept_for_feed:
        # Not an error (they go once customs has them), but a feed that long behind is worth a look.
        log.warning(
            "retention.kept_for_feed",
            run_id=run.run_id,
            actor=actor,
            dry_run=dry_run,
            messages=run.kept_for_feed,
            reason="past their retention cutoff, but the customs pre-arrival feed has not handed them over "
            "yet; kept whole until it has",
        )
    return run


def _cutoff_items(c: Cutoffs) -> list[tuple[str, datetime | None]]:
    return [(category.value, c.of(category)) for category in Category]


class RetentionWorker:
    """Runs the policy now and then every ``interval_s``; a failed run is logged and the next one
    comes at its time (what a run removes is durable batch by batch, so nothing is half-done)."""

    def __init__(
        self, policy: RetentionConfig, store: Store, *, party: str, customs: "CustomsConfig | None"
    ) -> None:
        self.policy = policy
        self.store = store
        self.actor = f"retention:{party}"
        self.customs = customs

    async def run(self) -> None:
        while True:
            try:
                await purge(self.store, self.policy, actor=self.actor, customs=self.customs)
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
        # Past a cutoff but kept, by reason: final messages the customs feed has not handed over yet.
        "kept": {"customs_feed": run.kept_for_feed},
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
    if run.kept_for_feed:
        lines.append(
            f"  {'kept_for_feed':<17} {run.kept_for_feed:>8}  final messages past a cutoff that the customs pre-arrival "
            "feed has not handed over yet: kept whole until it has"
        )
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
