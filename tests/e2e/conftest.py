"""In-process gateways on real 127.0.0.1 sockets, built the way an operator would configure them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
import uuid

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from adapters.cites_write import permit_to_xml
from adapters.exchange_xml import build_envelope
from adapters.permit_json import permit_to_json
from domain.messages import Action, EnvelopeHeader, MessageStatus
from gateway import appkeys
from gateway.outbound import conversation_id
from simulators.network import GatewayProcess, Network, build_network, free_port
from simulators.samples import make_permit
from tests.pg import PgSchema


class Cluster:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.gateways: dict[str, GatewayProcess] = {}
        self.http: aiohttp.ClientSession | None = None

    async def start(self, party: str) -> GatewayProcess:
        gw = await GatewayProcess(self.net[party].config()).start()
        self.gateways[party] = gw
        return gw

    async def stop(self, party: str) -> None:
        await self.gateways.pop(party).stop()

    def store(self, party: str):
        return self.gateways[party].app[appkeys.STORE]

    def security(self, party: str):
        return self.gateways[party].app[appkeys.SECURITY]

    def url(self, party: str) -> str:
        return self.net[party].url

    def headers(self, party: str, *, operator: bool = False) -> dict[str, str]:
        node = self.net[party]
        return {"Authorization": f"Bearer {node.operator_token if operator else node.ma_token}"}

    async def submit(self, permit, *, party: str | None = None, key: str | None = None):
        party = party or permit.issuing_country
        headers = self.headers(party)
        if key:
            headers["Idempotency-Key"] = key
        async with self.http.post(
            f"{self.url(party)}/v1/permits", data=permit_to_json(permit), headers={**headers, "Content-Type": "application/json"}
        ) as resp:
            return resp.status, await resp.json()

    async def get(self, party: str, path: str, *, operator: bool = False):
        async with self.http.get(f"{self.url(party)}{path}", headers=self.headers(party, operator=operator)) as resp:
            return resp.status, await resp.json()

    async def post_json(self, party: str, path: str, body=None, *, operator: bool = False):
        async with self.http.post(f"{self.url(party)}{path}", json=body, headers=self.headers(party, operator=operator)) as resp:
            return resp.status, await resp.json()

    async def install_certificate(self, party: str, paths) -> None:
        """``party`` signs with ``paths`` (a KeyStore's key and certificate) and every other
        gateway pins that certificate; the gateways running are restarted to load it."""
        running = list(self.gateways)
        for p in running:
            await self.stop(p)
        keys = self.net[party].dir / "keys" / party
        shutil.copy2(paths.key, keys / "key.pem")
        shutil.copy2(paths.cert, keys / "cert.pem")
        shutil.copy2(paths.cert, self.net.root / "certs" / f"{party}.pem")
        for p in running:
            await self.start(p)

    @contextlib.asynccontextmanager
    async def running(self, parties):
        """Serve ``parties`` and a client session for the test; stop everything after it."""
        self.http = aiohttp.ClientSession()
        try:
            for party in parties:
                await self.start(party)
            yield self
        finally:
            await self.http.close()
            for party in list(self.gateways):
                await self.stop(party)

    async def wait_status(self, party: str, message_id: str, statuses: set[MessageStatus], timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = await self.store(party).get_message(message_id)
            if m is not None and m.status in statuses:
                return m
            await asyncio.sleep(0.05)
        m = await self.store(party).get_message(message_id)
        raise AssertionError(f"message {message_id} on {party} is {m.status if m else None}, expected {statuses}")


async def send_as_issuer(cluster: Cluster, permit, *, receiver: str, created_at: datetime | None = None):
    """Deliver ``permit`` straight to ``receiver`` the way its issuer's gateway does, in a message
    created at ``created_at``: how a test sends a permit that was valid when its message was made
    and has expired since (parked, retried, relayed), which no submission today can produce.
    Returns the HTTP status and the signed answer."""
    issuer = permit.issuing_country
    security = cluster.security(issuer)
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()), conversation_id=conversation_id(issuer, permit.number),
        sender=issuer, receiver=receiver, document_type="CITESEPermit", document_number=permit.number,
        document_issuer=issuer, document_version=1, action=Action.ISSUE,
        created_at=created_at or datetime.now(timezone.utc),
    )  # fmt: skip
    payload = security.sign(permit_to_xml(permit))
    body = security.sign(build_envelope(header, payload, sent_at=datetime.now(timezone.utc)))
    async with cluster.http.post(
        f"{cluster.url(receiver)}/exchange/v1/messages", data=body, headers={"Content-Type": "application/xml"}
    ) as resp:
        return resp.status, await resp.read()


PARTIES = ("CH", "FR", "KE")


@contextlib.asynccontextmanager
async def party_stores(kind: str, parties, prefix: str):
    """Store URLs for ``build_network``: None (each party's own SQLite file) or, for "postgres",
    a fresh PostgreSQL schema per party, dropped afterwards."""
    if kind != "postgres":
        yield None
        return
    schemas = [PgSchema(f"{prefix}_{p.lower()}") for p in parties]
    try:
        for schema in schemas:
            await schema.create()
        yield {p: s.url for p, s in zip(parties, schemas)}
    finally:
        for schema in schemas:
            await schema.drop()


STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


RETRY = {"max_attempts": 4, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 0.5}  # parked after 0.7 s of failures
# For a test that brings a partner back and expects the message delivered, not parked: the
# sender keeps trying for about 9 s, whatever the partner's start-up takes on a busy machine.
PATIENT_RETRY = {"max_attempts": 20, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 0.5}


@contextlib.asynccontextmanager
async def running_cluster(kind: str, root: Path, *, retry: dict = RETRY):
    """CH, FR and KE on 127.0.0.1, each on its own store (``kind``), with ``retry`` to partners."""
    async with party_stores(kind, PARTIES, "e2e") as store_urls:
        net = build_network(root / "net", PARTIES, store_urls=store_urls, retry=retry)
        async with Cluster(net).running(PARTIES) as c:
            yield c


@pytest.fixture(params=STORES)
async def cluster(request, tmp_path):
    """CH, FR and KE on 127.0.0.1, each on its own store: SQLite files, or PostgreSQL schemas."""
    async with running_cluster(request.param, tmp_path) as c:
        yield c


@pytest.fixture(params=STORES)
async def patient_cluster(request, tmp_path):
    """The same, with senders that retry for long enough to outlast a partner's restart."""
    async with running_cluster(request.param, tmp_path, retry=PATIENT_RETRY) as c:
        yield c


@pytest.fixture
def permit_ch_fr():
    return make_permit(random.Random(42), issuer="CH", importer_country="FR", number="CH26-000042")


# --- customs: CH issues to FR, FR's customs (and KE's, CH's) verify, write off and get the feed ---

CUSTOMS_TOKENS = {
    "fr-customs": ("FR", "customs"),
    "fr-cdg": ("FR/FRCDG", "customs"),
    "ke-customs": ("KE", "customs"),
    "ch-customs": ("CH", "customs"),
}
FINAL = {MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED, MessageStatus.SEND_FAILURE}


def customs_extra(feed: list[str]) -> str:
    """The customs tokens and a ``[customs]`` table whose feed settings are ``feed`` (TOML lines)."""
    lines = []
    for name, (country, role) in CUSTOMS_TOKENS.items():
        lines += ["", "[[token]]", f'name = "{name}"', f'token = "tok-{name}"', f'role = "{role}"', f'countries = ["{country}"]']
    lines += ["", "[customs]", *feed, "[customs.risk]", 'seed = "test"', 'species_of_concern = ["Panthera leo"]', "random_rate = 0.0"]
    return "\n".join(lines) + "\n"


class Feed:
    """A customs system's webhook receiver."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()

        async def receive(request: web.Request) -> web.Response:
            self.items.append(await request.json())
            return web.Response(status=204)

        app.router.add_post("/pre-arrival", receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()


class CustomsCluster(Cluster):
    feed: Feed

    async def call(self, party: str, method: str, path: str, *, token: str, body=None, **kw):
        headers = {"Authorization": f"Bearer tok-{token}", **kw.pop("headers", {})}
        async with self.http.request(method, f"{self.url(party)}{path}", json=body, headers=headers, **kw) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()

    async def verify(self, party: str, issuer: str, number: str, *, token: str = "fr-customs", **query):
        return await self.call(party, "GET", f"/v1/verifications/{issuer}/{number}", token=token, params=query)

    async def write_off(self, party: str, issuer: str, number: str, body, *, token: str = "fr-customs"):
        return await self.call(party, "POST", f"/v1/permits/{issuer}/{number}/write-offs", token=token, body=body)

    async def deliver(self, permit):
        status, body = await self.submit(permit)
        assert status == 202, body
        for m in body["messages"]:
            sent = await self.wait_status(permit.issuing_country, m["message_id"], FINAL)
            assert sent.status is MessageStatus.ACKNOWLEDGED, sent


@contextlib.asynccontextmanager
async def customs_network(
    root: Path, store: str, *, feed: list[str], feed_only: str | None = None, parties=PARTIES, prefix: str = "cu"
):
    """A network built for customs, not started: ``customs_extra(feed)`` in every configuration,
    or only in ``feed_only``'s (the others get no feed)."""
    extra_for = None if feed_only is None else {p: customs_extra(feed if p == feed_only else []) for p in parties}
    async with party_stores(store, parties, prefix) as store_urls:
        yield CustomsCluster(
            build_network(
                root, parties, store_urls=store_urls, extra="" if extra_for else customs_extra(feed), extra_for=extra_for,
                retry=RETRY,
            )
        )  # fmt: skip


@pytest.fixture(params=STORES)
async def customs(request, tmp_path):
    """CH, FR and KE with customs tokens; FR's pre-arrival feed goes to a webhook receiver (``customs.feed``)."""
    feed = Feed()
    await feed.start()
    try:
        settings = [f'feed_url = "http://127.0.0.1:{feed.port}/pre-arrival"', "feed_poll_s = 0.05"]
        async with customs_network(tmp_path / "net", request.param, feed=settings) as c:
            c.feed = feed
            async with c.running(PARTIES):
                yield c
    finally:
        await feed.stop()


def customs_permit(number: str, seed: int = 42, **changes):
    """A two-line permit CH issues to an importer in FR."""
    p = make_permit(random.Random(seed), issuer="CH", importer_country="FR", number=number, items=2)
    return replace(p, **changes) if changes else p
