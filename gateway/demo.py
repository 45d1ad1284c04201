"""``epix demo``: three national gateways on 127.0.0.1 exchanging a few hundred permits.

Each gateway has a simulated Management Authority system behind it that pushes permits through
the local API; some permits are later cancelled or replaced, a few submissions are invalid, and
one partner (KE) goes down for a while and comes back. The summary is counted from the
receivers' stores, not from the senders' hopes: lost and duplicated must both be 0.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import statistics
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp

from adapters.permit_json import permit_to_dict, permit_to_json
from domain.messages import Direction, MessageStatus
from gateway import appkeys
from gateway.logs import configure_logging
from gateway.store.base import MessageFilter
from simulators.network import GatewayProcess, Network, build_network
from simulators.samples import make_permit

PARTIES = ("CH", "FR", "KE")
DOWN_PARTY = "KE"


@dataclass
class Tally:
    accepted: int = 0
    cancels: int = 0
    replacements: int = 0
    rejected: Counter = field(default_factory=Counter)
    submit_retries: int = 0
    issued: list[tuple[str, str]] = field(default_factory=list)  # (issuer, number)


_T0 = time.monotonic()


def _say(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.2f}s] {text}", flush=True)


async def _post(http: aiohttp.ClientSession, url: str, token: str, body: bytes, *, key: str | None, tally: Tally, content_type="application/json"):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    if key:
        headers["Idempotency-Key"] = key
    for attempt in range(40):
        try:
            async with http.post(url, data=body, headers=headers) as resp:
                return resp.status, await resp.json()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
            # The MA system retries with the same Idempotency-Key while its gateway is down.
            tally.submit_retries += 1
            await asyncio.sleep(0.25)
    raise RuntimeError(f"gateway at {url} did not come back")


async def _ma_system(party: str, net: Network, http, rng: random.Random, count: int, tally: Tally, progress) -> None:
    node = net[party]
    others = [p for p in PARTIES if p != party]
    for i in range(count):
        permit = make_permit(rng, issuer=party, importer_country=rng.choice(others), number=f"{party}26-{i:05d}")
        body = permit_to_json(permit)
        status, answer = await _post(http, f"{node.url}/v1/permits", node.ma_token, body, key=f"{party}-{i}", tally=tally)
        if status == 202:
            tally.accepted += 1
            tally.issued.append((party, permit.number))
            roll = rng.random()
            if roll < 0.05:
                status, answer = await _post(
                    http,
                    f"{node.url}/v1/permits/{party}/{permit.number}/cancel",
                    node.ma_token,
                    json.dumps({"reason": "Issued in error"}).encode(),
                    key=None,
                    tally=tally,
                )
                tally.cancels += status == 202
            elif roll < 0.10:
                replacement = make_permit(
                    rng, issuer=party, importer_country=permit.importer.address.country, number=f"{party}26-{i:05d}R", replaces=permit.number
                )
                status, answer = await _post(
                    http, f"{node.url}/v1/permits", node.ma_token, permit_to_json(replacement), key=f"{party}-{i}R", tally=tally
                )
                tally.replacements += status == 202
        else:
            tally.rejected[answer.get("code", str(status))] += 1
        progress()


async def _invalid_submissions(net: Network, http, tally: Tally, rng: random.Random) -> None:
    node = net["CH"]
    url = f"{node.url}/v1/permits"
    good = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-INVALID")
    bad_quantity = permit_to_dict(good)
    bad_quantity["items"][0]["quantity"] = "-5"
    wrong_scope = permit_to_dict(make_permit(rng, issuer="FR", importer_country="CH", number="FR26-NOTYOURS"))
    cases = [
        (b"{not json", node.ma_token, "application/json"),
        (json.dumps(bad_quantity, default=str).encode(), node.ma_token, "application/json"),
        (json.dumps(wrong_scope, default=str).encode(), node.ma_token, "application/json"),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'a'>]><x>&a;</x>", node.ma_token, "application/xml"),
        (json.dumps(permit_to_dict(good), default=str).encode(), "not-a-token", "application/json"),
        (b"permit please", node.ma_token, "text/plain"),
    ]
    for body, token, ctype in cases:
        status, answer = await _post(http, url, token, body, key=None, tally=tally, content_type=ctype)
        tally.rejected[answer.get("code", str(status))] += 1


async def _wait_final(gateways: dict[str, GatewayProcess], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    pending_states = {MessageStatus.SEND_ENQUEUED, MessageStatus.SENDING, MessageStatus.WAITING_FOR_RETRY}
    while time.monotonic() < deadline:
        pending = 0
        for gw in gateways.values():
            counts = await gw.app[appkeys.STORE].counts_by_status()
            pending += sum(n for status, n in counts.items() if MessageStatus(status) in pending_states)
        if pending == 0:
            return True
        await asyncio.sleep(0.2)
    return False


async def _summarise(gateways: dict[str, GatewayProcess], tally: Tally, elapsed: float) -> dict:
    outbound, inbound = [], []
    for gw in gateways.values():
        store = gw.app[appkeys.STORE]
        for direction, bucket in ((Direction.OUTBOUND, outbound), (Direction.INBOUND, inbound)):
            before = None
            while True:
                page = await store.list_messages(MessageFilter(direction=direction, limit=1000, before=before))
                bucket.extend(page)
                if len(page) < 1000:
                    break
                before = page[-1].created_at
    received_ids = Counter(m.message_id for m in inbound)
    effects = Counter((m.receiver, m.issuer, m.number, m.version, m.action.value) for m in inbound)
    acked = [m for m in outbound if m.status is MessageStatus.ACKNOWLEDGED]
    lost = [m for m in outbound if m.message_id not in received_ids]
    latencies = []
    for m in acked:
        latencies.append((m.updated_at - m.created_at) / timedelta(milliseconds=1))
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {
        "gateways": list(gateways),
        "permits_accepted": tally.accepted,
        "cancellations": tally.cancels,
        "replacements": tally.replacements,
        "messages_sent": len(outbound),
        "delivered_with_receipt": len(acked),
        "retried": sum(1 for m in outbound if m.attempts > 1),
        "parked": sum(1 for m in outbound if m.status is MessageStatus.SEND_FAILURE),
        "refused_by_partner": sum(1 for m in outbound if m.status is MessageStatus.REJECTED),
        "rejected_at_submission": dict(tally.rejected),
        "submit_retries_while_down": tally.submit_retries,
        "lost": len(lost),
        "duplicated": sum(n - 1 for n in received_ids.values() if n > 1) + sum(n - 1 for n in effects.values() if n > 1),
        "elapsed_s": round(elapsed, 2),
        "throughput_msgs_per_s": round(len(acked) / elapsed, 1) if elapsed else 0.0,
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_ms_mean": round(statistics.fmean(latencies), 1) if latencies else 0.0,
    }


def _table(summary: dict) -> str:
    rows = [
        ("permits accepted", summary["permits_accepted"]),
        ("  of which later cancelled", summary["cancellations"]),
        ("  replacements issued", summary["replacements"]),
        ("messages sent", summary["messages_sent"]),
        ("delivered with signed receipt", summary["delivered_with_receipt"]),
        ("retried (partner down)", summary["retried"]),
        ("parked for an operator", summary["parked"]),
        ("refused by partner", summary["refused_by_partner"]),
        ("rejected at submission", ", ".join(f"{k} {v}" for k, v in sorted(summary["rejected_at_submission"].items())) or 0),
        ("lost", summary["lost"]),
        ("duplicated", summary["duplicated"]),
        ("throughput", f"{summary['throughput_msgs_per_s']} messages/s"),
        ("latency submit→receipt p50 / p99", f"{summary['latency_ms_p50']} / {summary['latency_ms_p99']} ms"),
        ("elapsed", f"{summary['elapsed_s']} s"),
    ]
    width = max(len(r[0]) for r in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 44 + "+"
    out = [line]
    for name, value in rows:
        text = str(value)
        chunks = textwrap.wrap(text, 42) or [""]
        out.append(f"| {name:<{width}} | {chunks[0]:<42} |")
        out += [f"| {'':<{width}} | {chunk:<42} |" for chunk in chunks[1:]]
    out.append(line)
    return "\n".join(out)


async def run_demo(
    *, permits: int = 300, json_path: str | None = None, seed: int = 7, workdir: str | None = None, amqp: str | None = None
) -> dict:
    global _T0
    _T0 = time.monotonic()
    configure_logging(level="ERROR")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="epix-demo-"))
    _say(f"epix demo: building a test PKI and {len(PARTIES)} gateways in {root}")
    # --amqp: every gateway's delivery queue on that RabbitMQ, under a prefix of its own per run.
    queue_urls = {p: amqp for p in PARTIES} if amqp else None
    net = build_network(root, PARTIES, queue_urls=queue_urls, queue_prefix=f"epix-demo-{secrets.token_hex(4)}")
    if amqp:
        _say("  delivery queues on RabbitMQ (quorum queues per route, publisher confirms)")
    gateways = {p: await GatewayProcess(net[p].config()).start() for p in PARTIES}
    for p in PARTIES:
        _say(f"  gateway {p} listening on {net[p].url}")
    rng = random.Random(seed)
    tally = Tally()
    per_party = max(1, permits // len(PARTIES))
    total = per_party * len(PARTIES)
    done = 0
    next_mark = 0.1

    def progress() -> None:
        nonlocal done, next_mark
        done += 1
        if done / total >= next_mark:
            _say(f"  submitted {done}/{total} permits")
            next_mark += 0.1

    async def outage() -> None:
        await asyncio.sleep(0.8)
        _say(f"  ! gateway {DOWN_PARTY} goes down")
        await gateways[DOWN_PARTY].stop()
        await asyncio.sleep(2.0)
        gateways[DOWN_PARTY] = await GatewayProcess(net[DOWN_PARTY].config()).start()
        _say(f"  ! gateway {DOWN_PARTY} is back")

    start = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await asyncio.gather(
                outage(),
                _invalid_submissions(net, http, tally, random.Random(seed + 1)),
                *(_ma_system(p, net, http, random.Random(seed * 31 + i), per_party, tally, progress) for i, p in enumerate(PARTIES)),
            )
        _say("  waiting for every message to end delivered or visibly failed ...")
        settled = await _wait_final(gateways, timeout_s=60)
        elapsed = time.monotonic() - start
        summary = await _summarise(gateways, tally, elapsed)
        summary["settled"] = settled
    finally:
        for gw in gateways.values():
            await gw.stop()
    _say(_table(summary))
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        _say(f"summary written to {json_path}")
    return summary
