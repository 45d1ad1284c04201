"""``epix demo``: national gateways and a regional hub on 127.0.0.1 exchanging a few hundred
permits, with customs at the border.

The story, in one run:

* CH, FR and KE are national gateways, each with a simulated Management Authority (MA) system
  pushing permits through the local API; some are later cancelled or replaced, a few submissions
  are invalid.
* TZ and UG are reached only through the regional hub HUB-AF: the hub pushes to TZ; UG accepts no
  connection and pulls what the hub holds for it.
* Partners reach FR through a fault-injecting proxy (503s, dropped connections, truncated
  receipts, duplicated requests), and KE goes down for 2 s and comes back: both end in retries.
* FR's customs verify every permit that arrived, with the stamp on the paper; meet a forged paper
  (wrong stamp), an invented number and a doctored database record; write off quantities (each
  declaration sent twice, as a client retrying after a lost answer) and exhaust one permit. Each
  write-off is endorsed back to CH, whose record then shows the actual quantities.

Everything in the summary is counted from the stores (the receivers', the hub's, the customs
ledger, the issuer's record), never from the senders' hopes: lost and duplicated must both be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import sqlite3
import statistics
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import aiohttp

from adapters.permit_json import permit_to_dict, permit_to_json
from domain.messages import Action, Direction, MessageStatus
from gateway import appkeys, paths
from gateway.logs import configure_logging
from gateway.store.base import MessageFilter, MessageRecord
from gateway.store.sqlite import SqliteStore
from simulators.faults import FaultProxy
from simulators.network import GatewayProcess, Network, build_network, free_port
from simulators.samples import make_permit

NATIONALS = ("CH", "FR", "KE")  # national gateways with an MA system each, reached directly
HUB = "HUB-AF"
PUSH_MEMBER, PULL_MEMBER = "TZ", "UG"  # reached only through the hub; UG collects by pull
MEMBERS = (PUSH_MEMBER, PULL_MEMBER)
PARTIES = (*NATIONALS, *MEMBERS)  # every gateway but the hub
DOWN_PARTY = "KE"  # goes down for a while and comes back
OUTAGE_AT, OUTAGE_S = 0.25, 2.0  # once this share of the permits is submitted, for this long
FAULTY = "FR"  # the partners reach it through the fault-injecting proxy
CUSTOMS = "FR"  # the customs administration at the border
ISSUER = "CH"  # customs write off its permits; the endorsements go back to it
# (share of the permits submitted, faults queued in the proxy: each spoils the next request to FR).
# Tied to progress rather than the clock, so that a short run meets them too.
FAULT_BATCHES = (
    (0.0, ("5xx", "drop", "truncate", "duplicate")),
    (0.35, ("truncate", "5xx", "duplicate", "drop")),
    (0.7, ("drop", "5xx", "truncate", "duplicate")),
)
PENDING = frozenset({MessageStatus.SEND_ENQUEUED, MessageStatus.SENDING, MessageStatus.WAITING_FOR_RETRY})


@dataclass
class Tally:
    """What the MA systems and customs were told; the summary counts from the stores instead."""

    accepted: int = 0
    cancels: int = 0
    replacements: int = 0
    rejected: Counter = field(default_factory=Counter)
    submit_retries: int = 0
    stamps: dict[tuple[str, str], str] = field(default_factory=dict)  # (issuer, number) -> box 5b, as on the paper


@dataclass
class CustomsTally:
    verified: set[tuple[str, str]] = field(default_factory=set)  # permits asked about, for counting the audit
    written_off: list[str] = field(default_factory=list)  # CH permits with a write-off
    retries_replayed: int = 0  # declarations sent again and answered "already recorded"
    overdraw_refused: int = 0
    exhausted: str | None = None


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


# --- the Management Authorities --------------------------------------------------------------


async def _ma_system(party: str, net: Network, http, rng: random.Random, count: int, tally: Tally, progress) -> None:
    node = net[party]
    # Direct partners and hub members in turn, so that even a short run reaches every kind.
    importers = [p for p in NATIONALS if p != party] + list(MEMBERS)
    for i in range(count):
        importer = importers[(i + NATIONALS.index(party)) % len(importers)]
        permit = make_permit(rng, issuer=party, importer_country=importer, number=f"{party}26-{i:05d}")
        body = permit_to_json(permit)
        status, answer = await _post(http, f"{node.url}/v1/permits", node.ma_token, body, key=f"{party}-{i}", tally=tally)
        if status == 202:
            tally.accepted += 1
            tally.stamps[(party, permit.number)] = permit.security_stamp
            roll = rng.random()
            if roll < 0.05:
                status, answer = await _post(
                    http,
                    node.url + paths.permit_url(party, permit.number, "cancel"),
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
                if status == 202:
                    tally.replacements += 1
                    tally.stamps[(party, replacement.number)] = replacement.security_stamp
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


# --- customs at the border -------------------------------------------------------------------


@dataclass
class CustomsClient:
    """FR's customs single window, with its bearer token (role customs)."""

    url: str
    token: str
    http: aiohttp.ClientSession
    tally: CustomsTally

    async def verify(self, issuer: str, number: str, *, stamp: str | None = None) -> dict:
        params = {"stamp": stamp} if stamp else {}
        self.tally.verified.add((issuer, number))
        async with self.http.get(self.url + paths.verification_url(issuer, number), params=params, headers=self._auth) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def write_off(self, issuer: str, number: str, declaration: str, lines: dict[str, str]) -> tuple[int, dict]:
        body = {
            "declaration": declaration,
            "office": "FRCDG",
            "date": datetime.now(timezone.utc).isoformat(),
            "port": "Paris-Charles de Gaulle",
            "transport_document": f"AWB 057-{sum(map(ord, declaration)) % 10**7:07d}",
            "officer": "J. Martin",
            "lines": [{"item": item, "quantity": q} for item, q in lines.items()],
        }
        async with self.http.post(self.url + paths.permit_url(issuer, number, "write-offs"), json=body, headers=self._auth) as resp:
            return resp.status, await resp.json()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _half(line: dict) -> str:
    remaining = Decimal(line["remaining"])
    step = Decimal(1) if line["unit"] == "NAR" else Decimal("0.01")
    half = (remaining / 2).quantize(step, rounding=ROUND_DOWN)
    return format(half if half > 0 else remaining, "f")


def _doctor(path: Path, issuer: str, number: str) -> None:
    """Change one letter of a stored signed permit, as an insider editing the database would."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        with conn:
            rows = conn.execute("SELECT rowid, signed_xml FROM permits WHERE issuer = ? AND number = ?", (issuer, number)).fetchall()
            for rowid, xml in rows:
                conn.execute("UPDATE permits SET signed_xml = ? WHERE rowid = ?", (bytes(xml).replace(b"Market Street", b"Market Streat", 1), rowid))
    finally:
        conn.close()


async def _customs_at_border(customs: CustomsClient, store, tally: Tally) -> None:
    ct = customs.tally
    arrived = sorted(
        {(m.issuer, m.number) for m in await _all(store, Direction.INBOUND) if m.action in (Action.ISSUE, Action.REPLACE)}
    )
    # Every permit that arrived is checked at the border with the stamp on its paper.
    answers = [await customs.verify(issuer, number, stamp=tally.stamps.get((issuer, number))) for issuer, number in arrived]
    verdicts = Counter(v["verdict"] for v in answers)
    _say(f"  customs at {CUSTOMS} checked {len(arrived)} permits: " + ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items())))
    valid = [v for v in answers if v["verdict"] == "VALID"]
    ours = [v for v in valid if v["issuer"] == ISSUER]
    others = [v for v in valid if v["issuer"] != ISSUER]

    # Forgeries: a genuine number on a paper with another stamp, a number never issued, and a
    # stored permit someone edited (its issuer's signature no longer verifies).
    if valid:
        genuine = valid[len(valid) // 2]
        v = await customs.verify(genuine["issuer"], genuine["number"], stamp="0000000000")
        _say(f"  ! forged paper for {genuine['issuer']}/{genuine['number']} (wrong stamp): {v['verdict']}")
    v = await customs.verify(ISSUER, f"{ISSUER}26-99999")
    _say(f"  ! invented permit {ISSUER}/{ISSUER}26-99999: {v['verdict']}")
    doctored = others[-1] if others else (ours.pop() if len(ours) > 1 else None)
    if doctored is not None and isinstance(store, SqliteStore):
        await asyncio.to_thread(_doctor, store.path, doctored["issuer"], doctored["number"])
        v = await customs.verify(doctored["issuer"], doctored["number"], stamp=tally.stamps.get((doctored["issuer"], doctored["number"])))
        _say(f"  ! stored record of {doctored['issuer']}/{doctored['number']} edited behind the gateway's back: {v['verdict']}")

    # One permit is used up in a single declaration; over-drawing it again is refused as a whole.
    if ours:
        full = ours.pop(0)
        number = full["number"]
        status, w = await customs.write_off(ISSUER, number, f"FR-{number}-ALL", {line["item"]: line["remaining"] for line in full["permit"]["lines"]})
        if status == 201:
            ct.written_off.append(number)
            v = await customs.verify(ISSUER, number, stamp=tally.stamps.get((ISSUER, number)))
            ct.exhausted = number
            _say(f"  customs wrote off all of {ISSUER}/{number}; verified again: {v['verdict']}")
            status, _ = await customs.write_off(ISSUER, number, f"FR-{number}-MORE", {full["permit"]["lines"][0]["item"]: "1"})
            ct.overdraw_refused += status == 409
        else:
            _say(f"  ! write-off of {ISSUER}/{number} refused: {w.get('code')}: {w.get('message')}")
    # The others get part of their first line written off; each declaration is sent twice, as a
    # client that lost the first answer would: the second is answered from the ledger.
    for v in ours:
        number, line = v["number"], v["permit"]["lines"][0]
        ref = f"FR-{number}-1"
        status, w = await customs.write_off(ISSUER, number, ref, {line["item"]: _half(line)})
        if status == 201:
            ct.written_off.append(number)
            status, again = await customs.write_off(ISSUER, number, ref, {line["item"]: _half(line)})
            ct.retries_replayed += status == 200 and again.get("replayed") is True
        else:
            _say(f"  ! write-off of {ISSUER}/{number} refused: {w.get('code')}: {w.get('message')}")
    _say(
        f"  customs wrote off {len(ct.written_off)} {ISSUER} permits ({ct.retries_replayed} declarations resent: "
        f"answered from the ledger); endorsements on their way to {ISSUER}"
    )


# --- counting from the stores ----------------------------------------------------------------


async def _all(store, direction: Direction) -> list[MessageRecord]:
    out: list[MessageRecord] = []
    before, before_id = None, None
    while True:
        page = await store.list_messages(MessageFilter(direction=direction, limit=1000, before=before, before_id=before_id))
        out.extend(page)
        if len(page) < 1000:
            return out
        before, before_id = page[-1].created_at, page[-1].message_id


async def _wait_final(gateways: dict[str, GatewayProcess], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = 0
        for gw in gateways.values():
            counts = await gw.app[appkeys.STORE].counts_by_status()
            pending += sum(n for status, n in counts.items() if MessageStatus(status) in PENDING)
        if pending == 0:
            return True
        await asyncio.sleep(0.2)
    return False


async def _wait_reports(gateways: dict[str, GatewayProcess], timeout_s: float) -> None:
    """Until every sender has the hub's final word on each message it sent via the hub."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = 0
        for party in PARTIES:
            waiting += len(await gateways[party].app[appkeys.STORE].awaiting_delivery_report(limit=1))
        if not waiting:
            return
        await asyncio.sleep(0.2)


async def _summarise(gateways: dict[str, GatewayProcess], tally: Tally, ct: CustomsTally, exchange_s: float, elapsed: float) -> dict:
    stores = {p: gw.app[appkeys.STORE] for p, gw in gateways.items()}
    sent: list[MessageRecord] = []  # by the national gateways and members: the original senders
    inbound: list[MessageRecord] = []
    for party in PARTIES:
        sent += await _all(stores[party], Direction.OUTBOUND)
        inbound += await _all(stores[party], Direction.INBOUND)
    relayed = {m.message_id: m for m in await _all(stores[HUB], Direction.OUTBOUND)}  # the hub's own records
    attempts = [*sent, *relayed.values()]

    received_ids = Counter(m.message_id for m in inbound)
    # Endorsements legitimately repeat per permit (one per declaration): their effects are counted
    # in the issuer's ledger below instead.
    effects = Counter((m.receiver, m.issuer, m.number, m.version, m.action.value) for m in inbound if m.action is not Action.ENDORSE)
    lost = [m for m in sent if m.message_id not in received_ids]
    via_hub_ids = {m.message_id for m in sent if m.via == HUB}
    via_hub = [m for m in inbound if m.message_id in via_hub_ids]
    pulled = [
        m for m in via_hub
        if m.receiver == PULL_MEMBER and m.message_id in relayed and relayed[m.message_id].status is MessageStatus.ACKNOWLEDGED
    ]  # fmt: skip
    reports = Counter()
    for m in sent:
        if m.via == HUB:
            report = await stores[m.sender].delivery_report(m.message_id)
            reports[report.status if report else "none yet"] += 1

    # Customs: verdicts from FR's audit history, write-offs from its ledger, endorsements from CH's.
    fr, ch = stores[CUSTOMS], stores[ISSUER]
    verdicts: Counter = Counter()
    for issuer, number in ct.verified:
        verdicts.update(v.verdict for v in await fr.list_verifications(issuer, number, limit=1000))
    written = endorsed = matching = ledger_dupes = 0
    for number in ct.written_off:
        at_fr = [w for w in await fr.list_write_offs(ISSUER, number) if w.origin == "customs"]
        at_ch = [w for w in await ch.list_write_offs(ISSUER, number) if w.origin == "endorsement"]
        written += len({w.declaration for w in at_fr})
        endorsed += len({w.declaration for w in at_ch})
        used = await fr.used_quantities(ISSUER, number)
        matching += bool(used) and used == await ch.used_quantities(ISSUER, number)
        for rows in (at_fr, at_ch):
            ledger_dupes += sum(n - 1 for n in Counter((w.declaration, w.item_id) for w in rows).values() if n > 1)
    endorse_messages = [m for m in inbound if m.receiver == ISSUER and m.action is Action.ENDORSE]

    acked = [m for m in sent if m.status is MessageStatus.ACKNOWLEDGED]
    # Until the sender held a signed receipt (the hub's, for a message via the hub: later events
    # only record the hub's reports), and until the final receiver held the message.
    to_receipt = []
    for m in acked:
        events = await stores[m.sender].message_events(m.message_id)
        receipt_at = next(e.at for e in events if e.status is MessageStatus.ACKNOWLEDGED)
        to_receipt.append((receipt_at - m.created_at) / timedelta(milliseconds=1))
    held_at = {m.message_id: m.created_at for m in inbound}
    to_receiver = [(held_at[m.message_id] - m.created_at) / timedelta(milliseconds=1) for m in sent if m.message_id in held_at]

    def pct(values: list[float], p: float) -> float:
        values = sorted(values)
        return round(values[min(len(values) - 1, int(p * len(values)))], 1) if values else 0.0

    return {
        "gateways": list(gateways),
        "hub": HUB,
        "permits_accepted": tally.accepted,
        "cancellations": tally.cancels,
        "replacements": tally.replacements,
        "messages_sent": len(sent),
        "delivered_with_receipt": len(acked),
        "direct": len(inbound) - len(via_hub),
        "via_hub": len(via_hub),
        "pulled": len(pulled),
        "hub_reports": dict(reports),
        "retried": sum(1 for m in attempts if m.attempts > 1 and m.receiver != FAULTY),
        "retried_after_fault": sum(
            1 for m in attempts if m.receiver == FAULTY and m.attempts > 1 and m.status is MessageStatus.ACKNOWLEDGED
        ),
        "parked": sum(1 for m in attempts if m.status is MessageStatus.SEND_FAILURE),
        "refused_by_partner": sum(1 for m in attempts if m.status is MessageStatus.REJECTED),
        "rejected_at_submission": dict(tally.rejected),
        "submit_retries_while_down": tally.submit_retries,
        "verifications": dict(verdicts),
        "write_offs": written,
        "write_off_retries_replayed": ct.retries_replayed,
        "overdraw_refused": ct.overdraw_refused,
        "exhausted_permit": ct.exhausted,
        "endorsements_received_by_issuer": len(endorse_messages),
        "declarations_endorsed_at_issuer": endorsed,
        "issuer_quantities_match": f"{matching}/{len(ct.written_off)}",
        "lost": len(lost),
        "duplicated": sum(n - 1 for n in received_ids.values() if n > 1)
        + sum(n - 1 for n in effects.values() if n > 1)
        + ledger_dupes,
        "elapsed_s": round(elapsed, 2),
        "throughput_msgs_per_s": round(len(acked) / exchange_s, 1) if exchange_s else 0.0,
        "latency_ms_p50": pct(to_receipt, 0.50),
        "latency_ms_p99": pct(to_receipt, 0.99),
        "latency_ms_mean": round(statistics.fmean(to_receipt), 1) if to_receipt else 0.0,
        "to_receiver_ms_p50": pct(to_receiver, 0.50),
        "to_receiver_ms_p99": pct(to_receiver, 0.99),
    }


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "0"


def _table(summary: dict) -> str:
    rows = [
        ("permits accepted", summary["permits_accepted"]),
        ("  of which later cancelled", summary["cancellations"]),
        ("  replacements issued", summary["replacements"]),
        ("messages sent", summary["messages_sent"]),
        ("delivered with signed receipt", summary["delivered_with_receipt"]),
        ("  direct", summary["direct"]),
        (f"  via hub {summary['hub']}", summary["via_hub"]),
        (f"    of which pulled by {PULL_MEMBER}", summary["pulled"]),
        ("  hub's final word to senders", _counts(summary["hub_reports"])),
        (f"retried ({DOWN_PARTY} down)", summary["retried"]),
        (f"retried after fault (proxy→{FAULTY})", summary["retried_after_fault"]),
        ("faults injected by the proxy", _counts(summary.get("faults_injected", {}))),
        ("parked for an operator", summary["parked"]),
        ("refused by partner", summary["refused_by_partner"]),
        ("rejected at submission", _counts(summary["rejected_at_submission"])),
        (f"customs verifications at {CUSTOMS}", _counts(summary["verifications"])),
        ("customs write-offs", summary["write_offs"]),
        ("  resent, answered from ledger", summary["write_off_retries_replayed"]),
        ("  over-draw refused", summary["overdraw_refused"]),
        (f"endorsements received by {ISSUER}", summary["endorsements_received_by_issuer"]),
        (f"  {ISSUER}'s actual = customs' used", summary["issuer_quantities_match"]),
        ("lost", summary["lost"]),
        ("duplicated", summary["duplicated"]),
        ("throughput", f"{summary['throughput_msgs_per_s']} messages/s"),
        ("latency submit→receipt p50 / p99", f"{summary['latency_ms_p50']} / {summary['latency_ms_p99']} ms"),
        ("  submit→held by receiver p50 / p99", f"{summary['to_receiver_ms_p50']} / {summary['to_receiver_ms_p99']} ms"),
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


# --- the run ---------------------------------------------------------------------------------


def _customs_toml(token: str) -> str:
    return "\n".join(
        [
            "[[token]]",
            f'name = "{CUSTOMS.lower()}-customs"',
            f'token = "{token}"',
            'role = "customs"',
            f'countries = ["{CUSTOMS}"]',
            "",
            "[customs.risk]",
            'seed = "epix-demo"',
        ]
    ) + "\n"


async def run_demo(
    *, permits: int = 300, json_path: str | None = None, seed: int = 7, workdir: str | None = None, amqp: str | None = None
) -> dict:
    global _T0
    _T0 = time.monotonic()
    configure_logging(level="ERROR")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="epix-demo-"))
    everyone = (*PARTIES, HUB)
    _say(f"epix demo: building a test PKI, {len(PARTIES)} gateways and hub {HUB} in {root}")
    # --amqp: every gateway's delivery queue on that RabbitMQ, under a prefix of its own per run.
    queue_urls = {p: amqp for p in everyone} if amqp else None
    queue_prefix = f"epix-demo-{secrets.token_hex(4)}"
    proxy_port = free_port()
    customs_token = secrets.token_urlsafe(24)
    net = build_network(
        root,
        PARTIES,
        queue_urls=queue_urls,
        queue_prefix=queue_prefix,
        hub=HUB,
        via={m: HUB for m in MEMBERS},
        pull={PULL_MEMBER},
        endpoints={FAULTY: f"http://127.0.0.1:{proxy_port}"},
        extra_for={CUSTOMS: _customs_toml(customs_token)},
    )
    if amqp:
        _say(f"  delivery queues on RabbitMQ under {queue_prefix}.* (quorum queues per route, publisher confirms)")
    proxy = await FaultProxy(net[FAULTY].url, port=proxy_port).start()
    gateways: dict[str, GatewayProcess] = {}
    try:
        for p in everyone:
            gateways[p] = await GatewayProcess(net[p].config()).start()
        for p in NATIONALS:
            _say(f"  gateway {p} listening on {net[p].url}")
        _say(f"  hub {HUB} on {net[HUB].url}: pushes to {PUSH_MEMBER}, holds for {PULL_MEMBER} to pull")
        _say(f"  partners reach {FAULTY} through the fault proxy {proxy.url}")
        summary = await _story(net, gateways, proxy, customs_token, permits=permits, seed=seed)
    finally:
        workers = [gw.app.get(appkeys.DELIVERY) for gw in gateways.values() if gw.app is not None]
        declared = {name for w in workers if w is not None for name in getattr(w.queue, "queue_names", list)()}
        for gw in gateways.values():
            await gw.stop()
        await proxy.stop()
        if amqp:
            await _delete_broker_objects(amqp, declared, [f"{queue_prefix}.{p}" for p in everyone])
    _say(_table(summary))
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        _say(f"summary written to {json_path}")
    return summary


async def _delete_broker_objects(url: str, queues: set[str], exchanges: list[str]) -> None:
    """A demo leaves nothing behind on the broker: its own queues and exchanges are deleted."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    try:
        for name in sorted(queues):
            with contextlib.suppress(Exception):
                await (await connection.channel()).queue_delete(name)
        for name in exchanges:
            with contextlib.suppress(Exception):
                await (await connection.channel()).exchange_delete(name)
    finally:
        await connection.close()
    _say(f"  removed the demo's {len(queues)} queues and {len(exchanges)} exchanges from the broker")


async def _story(net: Network, gateways: dict[str, GatewayProcess], proxy: FaultProxy, customs_token: str, *, permits: int, seed: int) -> dict:
    tally = Tally()
    per_party = max(1, permits // len(NATIONALS))
    total = per_party * len(NATIONALS)
    done = 0
    next_mark = 0.1

    milestones = {share: asyncio.Event() for share in (OUTAGE_AT, *(at for at, _ in FAULT_BATCHES))}

    def progress() -> None:
        nonlocal done, next_mark
        done += 1
        if done / total >= next_mark:
            _say(f"  submitted {done}/{total} permits")
            next_mark += 0.1
        for share, reached in milestones.items():
            if done / total >= share:
                reached.set()

    async def outage() -> None:
        await milestones[OUTAGE_AT].wait()
        _say(f"  ! gateway {DOWN_PARTY} goes down")
        await gateways[DOWN_PARTY].stop()
        await asyncio.sleep(OUTAGE_S)
        gateways[DOWN_PARTY] = await GatewayProcess(net[DOWN_PARTY].config()).start()
        _say(f"  ! gateway {DOWN_PARTY} is back")

    async def faults() -> None:
        for at, modes in FAULT_BATCHES:
            if at > 0:
                await milestones[at].wait()
            for mode in modes:
                proxy.inject(mode)
            _say(f"  ! fault proxy: the next requests to {FAULTY} get {', '.join(modes)}")

    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(
            outage(),
            faults(),
            _invalid_submissions(net, http, tally, random.Random(seed + 1)),
            *(_ma_system(p, net, http, random.Random(seed * 31 + i), per_party, tally, progress) for i, p in enumerate(NATIONALS)),
        )
        _say("  waiting for every message to end delivered or visibly failed ...")
        settled = await _wait_final(gateways, timeout_s=60)
        exchange_s = time.monotonic() - start
        proxy.clear()  # faults not consumed yet are dropped: the exchange is over

        customs = CustomsClient(net[CUSTOMS].url, customs_token, http, CustomsTally())
        await _customs_at_border(customs, gateways[CUSTOMS].app[appkeys.STORE], tally)
    settled = await _wait_final(gateways, timeout_s=30) and settled
    await _wait_reports(gateways, timeout_s=20)
    summary = await _summarise(gateways, tally, customs.tally, exchange_s, time.monotonic() - start)
    summary["settled"] = settled
    summary["faults_injected"] = {k: v for k, v in proxy.stats.items() if k != "passed"}
    return summary
