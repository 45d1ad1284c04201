"""Customs verification under load: requests per second and latency with many permits stored,
against a bare aiohttp handler measured in the same run by the same client.

FR's gateway (SQLite, synchronous=FULL, every verification appended to the audit history before
it is answered) holds N distinct inbound permits from CH; 32 concurrent clients ask
``GET /v1/verifications/CH/<random number>`` for a fixed time, after a warm-up.

The stores are built once per size and kept in a cache directory (``$EPIX_BENCH_CACHE``, by
default ``~/.cache/epix-bench``; file ``customs-<N>-g<generation>.sqlite3``): a million permits
take a few minutes to write and about 11 GB of disk. The keys they were signed and checked with
are kept beside them (``customs-keys-g<generation>/``), with the trust marks in each store: a
gateway started on a store whose trust marks differ from its own trust checks every permit again
(``CustomsLedger.retrust``), which the run refuses rather than measure. Each permit is distinct (its own number;
parties, species, quantities and stamps from 256 CH-signed templates) and stored as receipt
stores it: the permit row (JSON and signed XML) and its check (gateway/customs/checks.py: the
signature verified, the summary, the risk inputs), which the receipt path makes once per
permit. Every tenth permit has a write-off. Re-signing a million permits would take hours on
this machine, so each permit's signed XML is its template's with the number changed: the check
records the template's genuine verification. The cost a permit pays once, on receipt, is
reported as ``check_ms`` (parse + XML-DSig verification + the check row).

Warm-up: the tables a verification reads are scanned once (the operating system caches them, as
it would on a gateway in service) and the load runs ``warmup_s`` before it is measured.

Targets (issue 5): verification rps >= 50% of the bare handler's; p99 at the largest size
<= 1.5 x p99 at the smallest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import aiohttp
from aiohttp import web

from adapters.cites_write import permit_to_xml
from adapters.permit_json import permit_to_json
from gateway.store import schema as q
from gateway.store import ledger as lq
from gateway.store.sqlite import SqliteStore
from simulators.network import GatewayProcess, build_network, free_port
from simulators.samples import make_permit

TOKEN = "bench-customs-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
GENERATION = 4  # bump when what is stored changes: older cached stores are then rebuilt
TEMPLATES = 256
PLACEHOLDER = "CH26-X@@@@@@"  # same length as CH26-0000000, so the XML stays the same size


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...] = (10_000, 1_000_000)
    seconds: float = 5.0
    concurrency: int = 32
    warmup_s: float = 2.0
    rounds: int = 5  # windows alternating bare handler and gateway
    cache_dir: Path | None = None

    @classmethod
    def quick(cls) -> "Settings":
        return cls(sizes=(1_000, 10_000), seconds=1.0, concurrency=16, warmup_s=0.5, rounds=2)

    def with_largest(self, permits: int | None) -> "Settings":
        """``--permits N``: N permits stored, compared with the smallest size (10,000 at most)."""
        if permits is None:
            return self
        return replace(self, sizes=tuple(sorted({min(self.sizes[0], permits), permits})))

    def cache(self) -> Path:
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "epix-bench"
        return Path(self.cache_dir or os.environ.get("EPIX_BENCH_CACHE") or default)


def number_of(i: int) -> str:
    return f"CH26-{i:07d}"


# --- building a store ------------------------------------------------------------------------------


def _templates(ch_security, service_make_check, now: datetime) -> list[tuple[bytes, bytes, Any]]:
    """(permit JSON, signed XML, check) per template, with PLACEHOLDER as the number."""
    from gateway.store.base import PermitRecord
    from domain.messages import Direction

    out = []
    for t in range(TEMPLATES):
        rng = random.Random(t)
        permit = make_permit(rng, issuer="CH", importer_country="FR", number=PLACEHOLDER, issued=now - timedelta(days=rng.randint(0, 20)))
        permit = replace(permit, security_stamp=f"{rng.randint(0, 10**10):010d}")
        js = permit_to_json(permit)
        xml = ch_security.sign(permit_to_xml(permit))
        record = PermitRecord(
            issuer="CH", number=PLACEHOLDER, version=1, direction=Direction.INBOUND, status="VALID", permit_json=js,
            signed_xml=xml, digest=hashlib.sha256(xml).hexdigest(), sender="CH", replaces=None, replaced_by=None,
            created_at=now,
        )  # fmt: skip
        out.append((js, xml, service_make_check(record, permit, now)))
    return out


def build_store(path: Path, size: int, templates, marks: dict[str, str], log: Callable[[str], None]) -> None:
    """Write ``size`` permits with their checks (and a write-off on every tenth) into a new store,
    with the trust ``marks`` the checks were made under (FR's; the gateway compares them at start)."""
    tmp = path.with_suffix(".building")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)

    async def migrate() -> None:
        store = SqliteStore(tmp)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")  # a half-built file is thrown away, never used
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    permit_sql = q.for_sqlite(q.INSERT_PERMIT)
    check_sql = f"INSERT INTO permit_checks ({lq.CHECK_COLUMNS}, status, replaced_by) VALUES ({', '.join('?' * 20)})"
    write_off_sql = q.for_sqlite(lq.INSERT_WRITE_OFF)
    balance_sql = "INSERT INTO permit_balances (issuer, number, item_id, unit, permitted, used, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    enc = lambda d: d.astimezone(timezone.utc).isoformat(timespec="microseconds")  # noqa: E731 -- as SqliteStore stores
    placeholder = PLACEHOLDER.encode()
    started, chunk = time.perf_counter(), 10_000
    for lo in range(0, size, chunk):
        permits, checks, write_offs, balances = [], [], [], []
        for i in range(lo, min(size, lo + chunk)):
            js, xml, check = templates[i % TEMPLATES]
            number = number_of(i)
            xml_i = xml.replace(placeholder, number.encode())
            digest = hashlib.sha256(xml_i).hexdigest()
            now = enc(check.checked_at)
            permits.append(("CH", number, 1, "inbound", "VALID", js.replace(placeholder, number.encode()), xml_i, digest, "CH", None, None, now))
            c = check._replace(number=number, digest=digest, facts=check.facts.replace(PLACEHOLDER, number))
            checks.append(lq.check_values(c, enc, b"", b"")[:18] + ("VALID", None))
            if i % 10 == 0:
                item, permitted, unit = _first_line(c)
                used = max(permitted / 4, 0) if unit != "NAR" else max(int(permitted) // 4, 1)
                write_offs.append((
                    "CH", number, f"25FR{i:08d}", item, str(used), unit, now, "FRCDG", "Paris-Charles de Gaulle",
                    f"AWB {i}", None, c.exporter, "customs", None, None, now, "bench",
                ))  # fmt: skip
                balances.append(("CH", number, item, unit, str(permitted), str(used), now))
        conn.execute("BEGIN")
        conn.executemany(permit_sql, permits)
        conn.executemany(check_sql, checks)
        conn.executemany(write_off_sql, write_offs)
        conn.executemany(balance_sql, balances)
        conn.execute("COMMIT")
        if (lo // chunk) % 20 == 19:
            done = min(size, lo + chunk)
            log(f"  {done:,} of {size:,} permits written ({time.perf_counter() - started:.0f} s)")
    conn.execute("DELETE FROM permit_check_queue")  # every permit has its check
    mark_sql = q.for_sqlite(lq.SAVE_TRUST_MARK)
    conn.executemany(mark_sql, [(party, mark, enc(datetime.now(timezone.utc))) for party, mark in marks.items()])
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("ANALYZE")
    conn.close()
    tmp.rename(path)


def _first_line(check) -> tuple[str, Any, str]:
    import json
    from decimal import Decimal

    from gateway.customs.checks import SEP

    item, quantity, unit = json.loads(check.facts.split(SEP, 1)[0])["lines"][0]
    return item, Decimal(quantity), unit


def warm(path: Path) -> None:
    """Read what verifications read, once, so that the operating system caches it."""
    conn = sqlite3.connect(path)
    for sql in (
        "SELECT count(version) FROM permits WHERE issuer = 'CH'",  # the primary key index only
        "SELECT sum(length(facts)) FROM permit_checks",
        "SELECT count(*) FROM permit_checks WHERE issuer = 'CH'",
        "SELECT sum(length(used)) FROM permit_balances",
        "SELECT count(*) FROM permit_balances WHERE issuer = 'CH'",
        "SELECT count(exporter) FROM write_offs WHERE exporter > ''",
    ):
        conn.execute(sql).fetchone()
    conn.close()


# --- load ------------------------------------------------------------------------------------------


@dataclass
class _Sample:
    latencies: list[float]
    elapsed: float = 0.0
    errors: int = 0

    def add(self, other: "_Sample") -> None:
        self.latencies += other.latencies
        self.elapsed += other.elapsed
        self.errors += other.errors

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        return {
            "requests": len(latencies),
            "errors": self.errors,
            "rps": round(len(latencies) / self.elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        }


async def _load(url_for: Callable[[random.Random], str], headers: dict[str, str], seconds: float, concurrency: int) -> _Sample:
    sample = _Sample([])
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with http.get(url_for(rng)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        sample.errors += 1
                sample.latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(client(random.getrandbits(32)) for _ in range(concurrency)))
        sample.elapsed = time.perf_counter() - started
    return sample


async def _bare_server() -> tuple[web.AppRunner, str]:
    """A handler that does nothing, for the same requests (URLs, bearer token) from the same client."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"verdict": "VALID"})

    app = web.Application()
    app.router.add_get("/v1/verifications/{issuer}/{number}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v1/verifications/CH/"


def _network(root: Path, db: Path | None, keys: Path | None = None):
    """CH and FR's configuration; with ``keys`` (a network built before), its keys and
    certificates instead of new ones: the cached stores' checks were made trusting them."""
    extra = f'\n[[token]]\nname = "bench-customs"\ntoken = "{TOKEN}"\nrole = "customs"\ncountries = ["FR"]\n'
    net = build_network(root, ("CH", "FR"), extra=extra, store_urls={"FR": f"sqlite://{db}"} if db else None)
    if keys is not None:
        shutil.copy2(keys / "ca.pem", root / "ca.pem")
        shutil.copytree(keys / "certs", root / "certs", dirs_exist_ok=True)
        for party in ("CH", "FR"):
            shutil.copytree(keys / party / "keys", root / party / "keys", dirs_exist_ok=True)
    return net


def _keys(cache: Path) -> Path:
    """The keys every cached store of this generation was signed and checked with, made once."""
    root = cache / f"customs-keys-g{GENERATION}"
    if not (root / "certs" / "CH.pem").exists():
        _network(root, None)
    return root


def prepare(settings: Settings, log: Callable[[str], None]) -> dict[int, Path]:
    """The cached store of every size, built if missing."""
    from gateway.customs.checks import make_check
    from gateway.customs.service import SignatureCheck
    from gateway.security import Security

    cache = settings.cache()
    cache.mkdir(parents=True, exist_ok=True)
    paths = {n: cache / f"customs-{n}-g{GENERATION}.sqlite3" for n in settings.sizes}
    missing = [n for n, p in paths.items() if not p.exists()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="epix-bench-customs-keys-") as tmp:
            net = _network(Path(tmp) / "net", None, _keys(cache))
            ch = Security.load(party="CH", keys_dir=net["CH"].dir, passphrase=None, agreements=net["CH"].config().agreements)
            fr = Security.load(party="FR", keys_dir=net["FR"].dir, passphrase=None, agreements=net["FR"].config().agreements)

            def check_of(record, permit, now):  # as FR's gateway checks a permit it received
                verified = fr.verify(record.signed_xml, "CH")
                cert = verified.certificate
                signature = SignatureCheck(True, verified.signer, cert.subject.rfc4514_string(), format(cert.serial_number, "x"), None, None)
                return make_check(record, permit, signature, now)

            templates = _templates(ch, check_of, datetime.now(timezone.utc).replace(microsecond=0))
            for n in missing:
                t0 = time.perf_counter()
                log(f"building the store of {n:,} permits in {paths[n]} (once; kept for later runs) ...")
                build_store(paths[n], n, templates, fr.trust.marks(), log)
                log(f"  built in {time.perf_counter() - t0:.0f} s, {paths[n].stat().st_size / 1e9:.2f} GB")
    return paths


async def _clear_audit(db: Path) -> None:
    """Remove the audit rows of earlier runs the only way the store allows: a retention run
    (the audit is append-only otherwise; store migration 7), with every row past its cutoff."""
    from gateway.config import RetentionConfig
    from gateway.retention import purge

    store = SqliteStore(db)
    await store.open()  # also applies migrations added since the store was built
    try:
        policy = RetentionConfig(verification_days=1, batch=5000)
        await purge(store, policy, actor="bench", customs=None, now=datetime.now(timezone.utc) + timedelta(days=2))
    finally:
        await store.close()


async def _rechecks_queued(db: Path) -> int:
    def count() -> int:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT COUNT(*) FROM permit_check_queue").fetchone()[0]
        finally:
            conn.close()

    return await asyncio.to_thread(count)


async def _check_cost(gw, number: str) -> float:
    """What a permit costs once, on receipt: read, parse, verify the signature, write its check."""
    from gateway.appkeys import STORE
    from gateway.customs import CUSTOMS

    service, store = gw.app[CUSTOMS], gw.app[STORE]
    record = (await store.get_permit_versions("CH", number))[-1]
    service._permits.clear()
    service._signatures.clear()
    t0 = time.perf_counter()
    check = service.make_check(record, datetime.now(timezone.utc))
    await store.save_permit_checks([(check, record.signed_xml, record.permit_json)])
    return (time.perf_counter() - t0) * 1000


async def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Per size: warm-up, then ``rounds`` short windows alternating the bare handler and the
    gateway, so that both see the same machine (other processes come and go); each size's
    ratio is against the bare windows measured beside it."""
    from bench.report import run_metadata

    paths = await asyncio.to_thread(prepare, settings, log)
    result: dict[str, Any] = {
        "name": "customs", "settings": {**settings.__dict__, "cache_dir": str(settings.cache())},
        "meta": run_metadata(), "sizes": [],
    }  # fmt: skip
    bare_runner, bare_base = await _bare_server()
    bare_all = _Sample([])
    window = settings.seconds / settings.rounds
    try:
        for size in settings.sizes:
            db = paths[size]
            await _clear_audit(db)
            await asyncio.to_thread(warm, db)
            with tempfile.TemporaryDirectory(prefix="epix-bench-customs-") as tmp:
                config = _network(Path(tmp) / "net", db, _keys(settings.cache()))["FR"].config()
                gw = await GatewayProcess(config).start()
                try:
                    rechecks = await _rechecks_queued(db)
                    if rechecks:  # the trust differs from the one the checks were made under
                        raise RuntimeError(f"the cached store {db} queued {rechecks:,} checks again at start; delete it to rebuild")
                    base = f"http://127.0.0.1:{config.port}/v1/verifications/CH/"
                    url = lambda rng: base + number_of(rng.randrange(size))  # noqa: E731
                    bare_url = lambda rng: bare_base + number_of(rng.randrange(size))  # noqa: E731
                    log(
                        f"{size:,} permits: warm-up {settings.warmup_s} s, then {settings.rounds} x ({window:.1f} s bare "
                        f"+ {window:.1f} s gateway), {settings.concurrency} clients ..."
                    )
                    await _load(url, HEADERS, settings.warmup_s, settings.concurrency)
                    measured, bare = _Sample([]), _Sample([])
                    for _ in range(settings.rounds):
                        bare.add(await _load(bare_url, HEADERS, window, settings.concurrency))
                        measured.add(await _load(url, HEADERS, window, settings.concurrency))
                    check_ms = await _check_cost(gw, number_of(size - 1))
                finally:
                    await gw.stop()
            row, bare_row = measured.summary(), bare.summary()
            row.update(permits=size, check_ms=round(check_ms, 2), bare=bare_row, vs_bare=round(row["rps"] / bare_row["rps"], 3))
            result["sizes"].append(row)
            bare_all.add(bare)
    finally:
        await bare_runner.cleanup()
    result["bare"] = bare_all.summary()
    first, last = result["sizes"][0], result["sizes"][-1]
    result["p99_ratio_largest_vs_smallest"] = round(last["p99_ms"] / first["p99_ms"], 3)
    result["errors"] = sum(s["errors"] for s in result["sizes"])
    return result


def render(result: dict[str, Any]) -> str:
    bare = result["bare"]
    lines = [
        "customs verification (FR gateway, SQLite FULL, audited), same client and requests for all rows",
        f"{'':>22} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8} {'errors':>7}",
        f"{'bare aiohttp handler':>22} {bare['rps']:>9} {bare['p50_ms']:>8} {bare['p99_ms']:>8} {'1.0':>8} {bare['errors']:>7}",
    ]
    for s in result["sizes"]:
        b = s["bare"]
        lines.append(f"{'  bare, beside it':>22} {b['rps']:>9} {b['p50_ms']:>8} {b['p99_ms']:>8} {'1.0':>8} {b['errors']:>7}")
        lines.append(
            f"{s['permits']:>13,} permits {s['rps']:>9} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['vs_bare']:>8} {s['errors']:>7}"
        )
    lines.append(
        f"p99 ratio largest/smallest: {result['p99_ratio_largest_vs_smallest']} (target <= 1.5); "
        f"verification/bare: {result['sizes'][-1]['vs_bare']} at the largest, {result['sizes'][0]['vs_bare']} at the smallest (target >= 0.5); "
        f"once per permit on receipt (parse, verify, store its check): {result['sizes'][-1]['check_ms']} ms"
    )
    lines.append(f"stores cached in {result['settings']['cache_dir']}")
    return "\n".join(lines)
