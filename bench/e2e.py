"""Two gateways, CH and FR, in this process on 127.0.0.1: permits submitted to CH's local API
until every outbound message holds FR's signed receipt (ACKNOWLEDGED in CH's store).

Per store (SQLite, then PostgreSQL if reachable):

- warm-up: a few exchanges, not counted;
- peak pass: ``permits`` submissions from ``concurrency`` clients, as fast as CH accepts them;
  throughput = acknowledged messages / (last ACKNOWLEDGED ``updated_at`` - first submission);
- paced pass: ``paced_permits`` submissions at half the peak throughput, open loop (each at its
  scheduled time, whether or not earlier ones are done); its p99 is the issue's latency target.

Latency, submit to receipt: from the moment the client sends the POST (client clock) to the
ACKNOWLEDGED transition's ``updated_at`` in CH's store (the gateway's clock; same process, same
clock). The store-only view (message ``created_at`` -> ``updated_at``) is reported beside it.

The floor of one exchange is measured in the same run, before the gateways start: 3 RSA-2048
signatures (issuer over the permit, sender over the envelope, receiver over the receipt) and 3
verifications (receiver: envelope and permit; sender: receipt), raw ``cryptography`` over
SignedInfo-sized input: ``floor = 1 / (3 t_sign + 3 t_verify)``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import structlog

from adapters.permit_json import permit_to_dict
from bench.measure import FULL, QUICK, Budget, Timings, measure
from bench.report import fmt, run_metadata, table
from keys.pki import Algorithm, generate_key

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SENDER, RECEIVER = "CH", "FR"
POLL_S = 0.05
SIGNED_INFO_SIZE = 600  # bytes: about what our SignedInfo canonicalises to (stages.json has the exact figure)


@dataclass(frozen=True)
class Settings:
    permits: int = 1000
    concurrency: int = 32
    paced_permits: int = 500
    warmup: int = 20
    pg_dsn: str | None = DEFAULT_PG_DSN
    stores: tuple[str, ...] = ("sqlite", "postgresql")
    floor_budget: Budget = FULL
    timeout_s: float = 300.0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(permits=100, concurrency=16, paced_permits=50, warmup=5, floor_budget=QUICK, timeout_s=120.0)

    def with_overrides(self, *, permits: int | None = None, concurrency: int | None = None, pg_dsn: str | None = None) -> "Settings":
        changes: dict[str, Any] = {"pg_dsn": pg_dsn}
        if permits is not None:
            changes.update(permits=permits, paced_permits=max(1, permits // 2))
        if concurrency is not None:
            changes["concurrency"] = concurrency
        return replace(self, **changes)


# --------------------------------------------------------------------------- the floor


def exchange_floor(budget: Budget) -> dict[str, Any]:
    """Raw RSA-2048 sign and verify, and the exchanges per second they alone would allow on one core."""
    from bench.stages import raw_crypto

    key = generate_key(Algorithm.RSA2048)
    sign, verify, _ = raw_crypto(key)
    data = [bytes([i]) * SIGNED_INFO_SIZE for i in range(16)]
    signatures = [sign(d) for d in data]
    t_sign: Timings = measure(lambda i: sign(data[i % 16]), budget)
    t_verify: Timings = measure(lambda i: verify(signatures[i % 16], data[i % 16]), budget)
    per_exchange = 3 * t_sign.mean + 3 * t_verify.mean
    return {
        "algorithm": Algorithm.RSA2048.value,
        "input_bytes": SIGNED_INFO_SIZE,
        "sign_ops_per_s": round(t_sign.ops_per_s, 1),
        "verify_ops_per_s": round(t_verify.ops_per_s, 1),
        "sign_mean_us": round(t_sign.mean * 1e6, 2),
        "verify_mean_us": round(t_verify.mean * 1e6, 2),
        "signatures_per_exchange": 3,
        "verifications_per_exchange": 3,
        "floor_exchanges_per_s": round(1 / per_exchange, 1),
    }


# --------------------------------------------------------------------------- submitting


@dataclass
class Submission:
    number: str
    body: bytes
    message_id: str | None = None
    sent_at: datetime | None = None  # when the POST left the client
    answered_at: datetime | None = None
    error: str | None = None


def _submissions(tag: str, count: int, seed: int) -> list[Submission]:
    """Permits prepared (and serialised) before the clock starts: the client should cost little."""
    from simulators.samples import make_permit

    rng = random.Random(seed)
    out = []
    for i in range(count):
        number = f"{SENDER}26-{tag}{i:06d}"
        permit = make_permit(rng, issuer=SENDER, importer_country=RECEIVER, number=number)
        out.append(Submission(number, json.dumps(permit_to_dict(permit), default=str).encode("utf-8")))
    return out


async def _submit(http: aiohttp.ClientSession, url: str, token: str, s: Submission) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    s.sent_at = datetime.now(UTC)
    try:
        async with http.post(f"{url}/v1/permits", data=s.body, headers=headers) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 202:
                s.error = f"HTTP {resp.status}: {body}"
                return
            messages = body.get("messages") or []
            if len(messages) != 1:
                s.error = f"expected one outbound message, got {len(messages)}"
                return
            s.message_id = messages[0]["message_id"]
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        s.error = f"{type(e).__name__}: {e}"
    finally:
        s.answered_at = datetime.now(UTC)


async def _closed_loop(http, url: str, token: str, subs: list[Submission], concurrency: int) -> None:
    queue = iter(subs)

    async def client() -> None:
        for s in queue:
            await _submit(http, url, token, s)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _open_loop(http, url: str, token: str, subs: list[Submission], rate: float) -> float:
    """Each submission at its own scheduled time (start + i / rate); the worst scheduling lag, s."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks, worst_lag = [], 0.0
    for i, s in enumerate(subs):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        worst_lag = max(worst_lag, loop.time() - due)
        tasks.append(asyncio.create_task(_submit(http, url, token, s)))
    await asyncio.gather(*tasks)
    return worst_lag


# --------------------------------------------------------------------------- waiting and reading back


async def _wait_acknowledged(store, target: int, timeout_s: float) -> dict[str, int]:
    """Poll CH's counts until ``target`` messages are ACKNOWLEDGED or nothing is left in flight."""
    from domain.messages import MessageStatus

    deadline = time.monotonic() + timeout_s
    while True:
        counts = await store.counts_by_status()
        acknowledged = counts.get(MessageStatus.ACKNOWLEDGED.value, 0)
        final = sum(n for status, n in counts.items() if MessageStatus(status).final)
        if acknowledged >= target or final >= target or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(POLL_S)


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]  # nearest rank


def _latency_ms(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {
        "p50": _round(_pct(ms, 50)),
        "p99": _round(_pct(ms, 99)),
        "mean": _round(sum(ms) / len(ms)) if ms else None,
        "max": _round(max(ms)) if ms else None,
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def _pass(kind: str, store, http, url: str, token: str, subs: list[Submission], *, settings: Settings, rate: float | None) -> dict[str, Any]:
    from domain.messages import MessageStatus

    before = await store.counts_by_status()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    lag = None
    if rate is None:
        await _closed_loop(http, url, token, subs, settings.concurrency)
    else:
        lag = await _open_loop(http, url, token, subs, rate)
    submitted_s = time.perf_counter() - t0
    accepted = [s for s in subs if s.message_id]
    target = sum(before.values()) + len(accepted)
    counts = await _wait_acknowledged(store, target, settings.timeout_s)
    waited_s = time.perf_counter() - t0

    records = [await store.get_message(s.message_id) for s in accepted]
    acked = [(s, m) for s, m in zip(accepted, records) if m is not None and m.status is MessageStatus.ACKNOWLEDGED]
    others: dict[str, int] = {}
    for m in records:
        if m is not None and m.status is not MessageStatus.ACKNOWLEDGED:
            others[m.status.value] = others.get(m.status.value, 0) + 1
    errors = [s.error for s in subs if s.error]
    last_ack = max((m.updated_at for _, m in acked), default=None)
    span_s = (last_ack - started).total_seconds() if last_ack else None
    throughput = len(acked) / span_s if span_s else None
    return {
        "pass": kind,
        "submitted": len(subs),
        "accepted": len(accepted),
        "acknowledged": len(acked),
        "not_acknowledged": others,
        "submit_errors": len(errors),
        "first_submit_errors": errors[:3],
        "concurrency": settings.concurrency if rate is None else None,
        "target_rate_per_s": _round(rate, 1),
        "worst_schedule_lag_ms": _round(lag * 1000) if lag is not None else None,
        "accept_rate_per_s": _round(len(accepted) / submitted_s, 1),
        "throughput_per_s": _round(throughput, 1),
        "wall_s": _round(span_s, 3),
        "client_observed_s": _round(waited_s, 3),
        "latency_ms": _latency_ms([(m.updated_at - s.sent_at).total_seconds() for s, m in acked]),
        "store_latency_ms": _latency_ms([(m.updated_at - m.created_at).total_seconds() for _, m in acked]),
        "final_counts": counts,
    }


# --------------------------------------------------------------------------- one store


def _with_schema(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query["schema"] = schema
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _pg_reachable(dsn: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return f"{type(e).__name__}: {e}"
    await conn.close()
    return None


async def _pg_schemas(dsn: str, schemas: list[str], *, create: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for schema in schemas:  # names are ours: bench_<party>_<hex>
            if create:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            else:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _passes(kind: str, store, node, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Warm-up, peak and paced passes against one running pair of gateways."""
    url, token = node.url, node.ma_token
    peak_subs = _submissions("P", settings.permits, 1)
    paced_subs = _submissions("H", settings.paced_permits, 2)
    connector = aiohttp.TCPConnector(limit=max(settings.concurrency, 64))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        log(f"  {kind}: warm-up ({settings.warmup}) ...")
        warm = await _pass("warm-up", store, http, url, token, _submissions("W", settings.warmup, 3), settings=settings, rate=None)
        if warm["acknowledged"] != settings.warmup:
            first = (warm["first_submit_errors"] or [f"statuses {warm['not_acknowledged'] or warm['final_counts']}"])[0]
            return {"error": f"the warm-up exchanges were not all acknowledged ({str(first)[:300]})", "warm_up": warm}
        log(f"  {kind}: peak, {settings.permits} permits, {settings.concurrency} clients ...")
        peak = await _pass("peak", store, http, url, token, peak_subs, settings=settings, rate=None)
        if not peak["throughput_per_s"]:
            return {"error": "no message was acknowledged in the peak pass", "peak": peak}
        half = peak["throughput_per_s"] / 2
        log(f"  {kind}: paced, {settings.paced_permits} permits at {half:.1f}/s ...")
        paced = await _pass("paced", store, http, url, token, paced_subs, settings=settings, rate=half)
        return {"peak": peak, "paced": paced}


async def run_store(kind: str, settings: Settings, floor: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from gateway import appkeys
    from gateway.logs import configure_logging
    from simulators.network import GatewayProcess, build_network

    result: dict[str, Any] = {"store": kind}
    store_urls = None
    schemas: list[str] = []
    if kind == "postgresql":
        if not settings.pg_dsn:
            return {**result, "skipped": "no PostgreSQL DSN given"}
        why = await _pg_reachable(settings.pg_dsn)
        if why:
            return {**result, "skipped": f"PostgreSQL unreachable at {settings.pg_dsn}: {why}"}
        suffix = uuid.uuid4().hex[:8]
        schemas = [f"bench_{p.lower()}_{suffix}" for p in (SENDER, RECEIVER)]
        await _pg_schemas(settings.pg_dsn, schemas, create=True)
        store_urls = {p: _with_schema(settings.pg_dsn, s) for p, s in zip((SENDER, RECEIVER), schemas)}
        result["schemas"] = schemas

    saved_logging = structlog.get_config()
    try:
        with tempfile.TemporaryDirectory(prefix="epix-bench-") as tmp, open(Path(tmp) / "gateways.log", "w", encoding="utf-8") as logfile:
            # What an operator would run: INFO, JSON lines, to a file (not to the table on stdout).
            configure_logging(level="INFO", json=True, stream=logfile)
            net = build_network(
                Path(tmp) / "net",
                (SENDER, RECEIVER),
                store_urls=store_urls,
                retry={"max_attempts": 8, "first_delay_s": 0.05, "factor": 2.0, "max_delay_s": 1.0},
            )
            gateways: list[GatewayProcess] = []
            try:
                for party in (SENDER, RECEIVER):
                    gateways.append(await GatewayProcess(net[party].config()).start())
                result.update(await _passes(kind, gateways[0].app[appkeys.STORE], net[SENDER], settings, log))
            finally:
                for gw in reversed(gateways):
                    await gw.stop()
    finally:
        structlog.configure(**saved_logging)
        if schemas:
            await _pg_schemas(settings.pg_dsn, schemas, create=False)
    if "error" in result:
        return result
    peak_rate = result["peak"]["throughput_per_s"]
    result["ratio_to_floor"] = round(peak_rate / floor["floor_exchanges_per_s"], 3)
    p99 = result["paced"]["latency_ms"]["p99"]
    result["targets"] = [
        {"target": "end-to-end >= 40% of the raw-crypto floor", "value": result["ratio_to_floor"], "threshold": 0.40, "met": result["ratio_to_floor"] >= 0.40},
        {"target": "p99 submit-to-receipt < 100 ms at half the peak rate", "value": p99, "threshold": 100.0, "met": p99 is not None and p99 < 100.0},
    ]
    return result


# --------------------------------------------------------------------------- the run


async def run(settings: Settings = Settings(), *, log: Callable[[str], None] = print) -> dict[str, Any]:
    log("  raw-crypto floor (RSA-2048) ...")
    floor = exchange_floor(settings.floor_budget)
    out: dict[str, Any] = {
        "benchmark": "e2e",
        "meta": run_metadata(),
        "settings": {**asdict(settings), "pg_dsn": settings.pg_dsn},
        "floor": floor,
        "notes": [
            "Both gateways (CH, FR) and the HTTP client share this process and its one event loop on 127.0.0.1; "
            "Python runs them on one core at a time (the GIL), whatever the machine's core count (meta.usable_cpus). "
            "The floor is per core, so ratio_to_floor compares like with like.",
            "throughput_per_s = acknowledged messages / (last ACKNOWLEDGED updated_at - first submission).",
            "latency_ms: client POST sent -> ACKNOWLEDGED updated_at in CH's store (same clock). "
            "store_latency_ms: message created_at -> ACKNOWLEDGED updated_at, both in CH's store.",
            "The gateways log at INFO as JSON lines to a file in the run's temporary directory, as in production.",
            "peak pass latencies include the backlog: when CH's API accepts faster than it delivers (compare accept_rate_per_s "
            "with throughput_per_s) they measure queueing, not one exchange.",
            "paced pass: open loop at half the peak pass's throughput; its latency_ms.p99 is the latency target.",
            "Each exchange: CH builds and signs the permit, stores it with its outbox message, signs the envelope, POSTs it; "
            "FR verifies envelope and permit, validates, stores, signs a receipt; CH verifies the receipt.",
        ],
        "stores": [],
        "errors": [],
    }
    for kind in settings.stores:
        try:
            out["stores"].append(await run_store(kind, settings, floor, log))
        except Exception as e:  # noqa: BLE001 -- report what failed and carry on with the next store
            tb = traceback.format_exc(limit=-8)
            out["stores"].append({"store": kind, "error": f"{type(e).__name__}: {e}", "traceback": tb})
        entry = out["stores"][-1]
        if "error" in entry:
            out["errors"].append(f"{kind}: {entry['error']}")
    return out


def render(result: dict[str, Any]) -> str:
    floor = result["floor"]
    lines = [
        f"End to end, CH -> FR over HTTP on 127.0.0.1, one process. Floor (RSA-2048, one core): "
        f"sign {floor['sign_ops_per_s']:,.0f}/s, verify {floor['verify_ops_per_s']:,.0f}/s -> "
        f"{floor['floor_exchanges_per_s']:,.1f} exchanges/s (3 signs + 3 verifies)"
    ]
    headers = ["store", "pass", "n", "acked", "rate in/s", "acked/s", "ratio", "p50 ms", "p99 ms", "store p99 ms", "target"]
    rows = []
    for entry in result["stores"]:
        if "skipped" in entry or "peak" not in entry:
            rows.append([entry["store"], "-", "", "", "", "", "", "", "", "", entry.get("skipped") or f"FAILED: {entry.get('error')}"])
            continue
        targets = entry.get("targets") or [None, None]
        for p in ("peak", "paced"):
            r = entry.get(p)
            if r is None:
                continue
            target = targets[0] if p == "peak" else targets[1]
            verdict = f"{'PASS' if target['met'] else 'MISS'} ({target['target']})" if target else ""
            rows.append(
                [
                    entry["store"],
                    p,
                    fmt(r["submitted"], "d"),
                    fmt(r["acknowledged"], "d"),
                    fmt(r["target_rate_per_s"] or r["accept_rate_per_s"], ",.1f"),
                    fmt(r["throughput_per_s"], ",.1f"),
                    fmt(entry.get("ratio_to_floor"), ".2f") if p == "peak" else "",
                    fmt(r["latency_ms"]["p50"], ",.1f"),
                    fmt(r["latency_ms"]["p99"], ",.1f"),
                    fmt(r["store_latency_ms"]["p99"], ",.1f"),
                    verdict,
                ]
            )
        if entry.get("error"):
            rows.append([entry["store"], "-", "", "", "", "", "", "", "", "", f"FAILED: {entry['error']}"])
    lines.append(table(headers, rows, right={2, 3, 4, 5, 6, 7, 8, 9}))
    lines.append("rate in/s: peak = accepted by CH's API per second; paced = the scheduled rate (half the peak's acked/s)")
    return "\n".join(lines)
