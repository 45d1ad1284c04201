"""A network of gateways on 127.0.0.1 for the demo, the end-to-end tests and the benchmarks.

``build_network`` makes a throwaway test PKI, a key directory and a configuration file per
party (the same TOML an operator writes), with every gateway pinned to every other's certificate.
``GatewayProcess`` runs one gateway in this process on a real socket; the crash tests run them
as separate processes with ``epix serve --config``.
"""

from __future__ import annotations

import collections
import random
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.app import create_app
from gateway.config import GatewayConfig, load_config
from keys.pki import Algorithm, cert_to_pem, make_test_ca
from keys.store import KeyStore


def _ephemeral_low() -> int:
    """Where the kernel's range of client (source) ports starts."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS and the BSDs start higher, at 49152


_LISTEN_FROM = 20000
_handed_out: collections.deque[int] = collections.deque(maxlen=2000)
_pick = random.Random()


def free_port() -> int:
    """A free port on 127.0.0.1 for a server started now or later, below the ephemeral range.

    Servers here are often started after something began calling them (a gateway restarted, a
    feed or webhook that comes up later). A client that keeps calling a port of the ephemeral
    range while nothing listens there can be given that very port as its own source port and
    connect to itself (TCP simultaneous open); the server then finds its port in use. No client
    is ever given a port below the range. The last ports handed out are not handed out again, as
    a server given one may not have bound it yet."""
    high = _ephemeral_low()
    if high - _LISTEN_FROM >= 1000:
        for _ in range(200):
            port = _pick.randrange(_LISTEN_FROM, high)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use (a local service, a socket in TIME_WAIT)
            _handed_out.append(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below the range
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    party: str
    port: int
    dir: Path
    config_path: Path
    ma_token: str = field(repr=False)
    operator_token: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> GatewayConfig:
        return load_config(self.config_path)


@dataclass
class Network:
    root: Path
    nodes: dict[str, Node]
    ca_pem: Path

    def __getitem__(self, party: str) -> Node:
        return self.nodes[party]


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_network(
    root: Path,
    parties: tuple[str, ...] = ("CH", "FR", "KE"),
    *,
    algorithm: Algorithm | str = Algorithm.RSA2048,
    store_urls: dict[str, str] | None = None,
    queue_urls: dict[str, str] | None = None,
    queue_prefix: str = "epix",
    retry: dict[str, float] | None = None,
    replay_window_s: float = 900,
    extra: str = "",
    extra_for: dict[str, str] | None = None,
    hub: str | None = None,
    via: dict[str, str] | None = None,
    pull: frozenset[str] | set[str] = frozenset(),
    endpoints: dict[str, str] | None = None,
) -> Network:
    """``hub`` adds a regional hub (its party id) beside the national gateways; ``via`` maps a
    party to the hub everyone reaches it through (and through which it sends everything); parties
    in ``pull`` accept no inbound connection and collect from the hub. ``endpoints`` overrides the
    URL at which the others reach a party (e.g. a fault-injecting proxy in front of it).
    ``extra`` is TOML appended to every configuration, ``extra_for`` to one party's (e.g. its
    customs tokens)."""
    via = dict(via or {})
    endpoints = dict(endpoints or {})
    if not set(pull) <= set(via):
        raise ValueError("a party that pulls must be reached via the hub (list it in via).")
    if via and hub is None:
        raise ValueError("via needs a hub.")
    parties = (*parties, hub) if hub else parties
    root.mkdir(parents=True, exist_ok=True)
    ca = make_test_ca("EPIX demo CA")
    ca_pem = root / "ca.pem"
    ca_pem.write_bytes(cert_to_pem(ca.certificate))
    certs_dir = root / "certs"
    certs_dir.mkdir(exist_ok=True)
    ports = {p: free_port() for p in parties}
    for party in parties:
        store = KeyStore(root / party)
        paths = store.init_party(party, algorithm, ca=ca, overwrite=True)
        (certs_dir / f"{party}.pem").write_bytes(paths.cert.read_bytes())
    retry = retry or {"max_attempts": 6, "first_delay_s": 0.2, "factor": 2.0, "max_delay_s": 2.0}
    nodes = {}
    def url_of(party: str) -> str:
        return endpoints.get(party, f"http://127.0.0.1:{ports[party]}")

    for party in parties:
        node_dir = root / party
        ma_token, op_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        lines = [
            "[gateway]",
            f"party = {_toml_str(party)}",
            *(['role = "hub"'] if party == hub else []),
            f"port = {ports[party]}",
            f"data_dir = {_toml_str(str(node_dir))}",
            f"replay_window_s = {replay_window_s}",
        ]
        if store_urls and party in store_urls:
            lines.append(f"store_url = {_toml_str(store_urls[party])}")
        if queue_urls and party in queue_urls:  # this gateway's delivery queue on RabbitMQ
            lines += ["", "[queue]", f"url = {_toml_str(queue_urls[party])}", f"prefix = {_toml_str(queue_prefix)}"]
        lines += [
            "",
            "[[token]]",
            f'name = "{party.lower()}-ma"',
            f"token = {_toml_str(ma_token)}",
            'role = "ma"',
            f"countries = [{_toml_str(party)}]",
            "",
            "[[token]]",
            f'name = "{party.lower()}-operator"',
            f"token = {_toml_str(op_token)}",
            'role = "operator"',
            f"countries = [{_toml_str(party)}]",
        ]
        for other in parties:
            if other == party:
                continue
            if other == hub:
                route = ['role = "hub"', f"endpoint = {_toml_str(url_of(other))}"]
                route += ['delivery = "pull"'] if party in pull else []
            elif party == hub and other in pull:
                route = ['delivery = "pull"']
            elif party != hub and (other in via or party in via):
                route = [f"via = {_toml_str(via.get(other) or via[party])}"]
            else:
                route = [f"endpoint = {_toml_str(url_of(other))}"]
            lines += [
                "",
                "[[partner]]",
                f"party = {_toml_str(other)}",
                *route,
                f"certificates = [{_toml_str(str(certs_dir / f'{other}.pem'))}]",
                "timeout_s = 5.0",
                "[partner.retry]",
            ]
            lines += [f"{k} = {v}" for k, v in retry.items()]
        config_path = node_dir / "gateway.toml"
        own_extra = (extra_for or {}).get(party, "")
        config_path.write_text("\n".join(lines) + "\n" + extra + "\n" + own_extra, encoding="utf-8")
        nodes[party] = Node(party, ports[party], node_dir, config_path, ma_token, op_token)
    return Network(root=root, nodes=nodes, ca_pem=ca_pem)


class GatewayProcess:
    """One gateway served on its configured 127.0.0.1 port inside this event loop."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> "GatewayProcess":
        self.app = create_app(self.config)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.config.port, reuse_address=True)
        await site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def running(self) -> bool:
        return self._runner is not None
