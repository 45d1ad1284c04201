"""The ``epix`` command. Exit 0 on success, 1 when the input is invalid or a signature fails
(the reason's code and sentence on stderr), 2 on usage errors. No traceback for bad input."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from domain.errors import EpixError, ErrorCode
from gateway import eventloop

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise EpixError(ErrorCode.NOT_FOUND, f"Cannot read {path}: {exc.strerror}.") from None


def _write(data: bytes, out: str | None) -> None:
    if out is None or out == "-":
        sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
        sys.stdout.flush()
    else:
        Path(out).write_bytes(data)


def _passphrase(args) -> str | None:
    var = getattr(args, "passphrase_env", None)
    if not var:
        return None
    value = os.environ.get(var)
    if value is None:
        raise EpixError(ErrorCode.KEY_ERROR, f"The environment variable {var} (passphrase) is not set.")
    return value


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def _load_permit(data: bytes):
    """A permit from JSON, EPT v2 XML, EPT v1 XML or an EPIX SOAP response."""
    if _looks_like_json(data):
        from adapters.permit_json import permit_from_json

        return permit_from_json(data)
    from adapters.cites_read import read_permit
    from adapters.xmlparse import parse_xml

    return read_permit(parse_xml(data, what="permit"))


# ----------------------------------------------------------------------------- commands


def cmd_keys_init(args) -> int:
    from keys.pki import Algorithm
    from keys.store import KeyStore

    paths = KeyStore(args.dir).init_party(args.party, Algorithm.parse(args.algorithm), passphrase=_passphrase(args))
    print(f"key {paths.key}\ncertificate {paths.cert}")
    return EXIT_OK


def cmd_keys_renew(args) -> int:
    from keys.pki import Algorithm
    from keys.store import KeyStore

    store = KeyStore(args.dir)
    paths = store.renew_party(args.party, Algorithm.parse(args.algorithm), passphrase=_passphrase(args))
    print(
        f"key {paths.key}\ncertificate {paths.cert}\nprevious certificate kept in {store.previous_dir(args.party)}\n"
        "Give partners the new certificate to pin beside the old one, then restart the gateway."
    )
    return EXIT_OK


def cmd_keys_test_pki(args) -> int:
    """A throwaway CA and one CA-issued key per party: for the demo, compose and tests, never production."""
    from keys.pki import Algorithm, cert_to_pem, make_test_ca
    from keys.store import KeyStore

    root = Path(args.dir)
    certs = root / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = make_test_ca("EPIX test CA")
    (root / "ca.pem").write_bytes(cert_to_pem(ca.certificate))
    for party in [p.strip() for p in args.parties.split(",") if p.strip()]:
        store = KeyStore(root / party)
        if store.has_party(party):
            print(f"{party}: key exists, kept")
        else:
            paths = store.init_party(party, Algorithm.parse(args.algorithm), ca=ca)
            print(f"{party}: key {paths.key}")
        (certs / f"{party}.pem").write_bytes(store.paths(party).cert.read_bytes())
    return EXIT_OK


def cmd_to_xml(args) -> int:
    from adapters.cites_write import permit_to_xml

    _write(permit_to_xml(_load_permit(_read(args.file))), args.output)
    return EXIT_OK


def cmd_to_json(args) -> int:
    from adapters.permit_json import permit_to_json

    _write(permit_to_json(_load_permit(_read(args.file)), indent=2), args.output)
    return EXIT_OK


def cmd_validate(args) -> int:
    from domain.rules import Severity, validate

    data = _read(args.file)
    if not _looks_like_json(data):
        from adapters.schema import permit_schema
        from adapters.xmlparse import parse_xml

        permit_schema().validate(parse_xml(data, what="permit"))
    permit = _load_permit(data)
    problems = validate(permit, **_judged_at(args.at))
    for p in problems:
        print(f"{p.severity.value.lower()}: {p.code} at {p.path}: {p.message}", file=sys.stderr)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        print(f"{ErrorCode.PERMIT_INVALID.name}: {len(errors)} error(s) in {args.file}", file=sys.stderr)
        return EXIT_INVALID
    print(f"valid: permit {permit.issuing_country}/{permit.number} ({len(problems)} warning(s))")
    return EXIT_OK


def cmd_from_csv(args) -> int:
    """One JSON file per permit of a spreadsheet, all or none: a sheet with a refused permit writes nothing."""
    from urllib.parse import quote

    from adapters.permit_csv import permits_from_csv
    from adapters.permit_json import permit_to_json
    from domain.rules import Severity, validate

    sheet = permits_from_csv(_read(args.file))
    judged_at = _judged_at(args.at)
    refused, ready = 0, []
    for entry in sheet:
        rows = f"row {entry.rows[0]}" if len(entry.rows) == 1 else f"rows {entry.rows[0]}-{entry.rows[-1]}"
        if entry.error is not None:
            refused += 1
            print(f"{entry.number or '?'} ({rows}): {entry.error.code.name}: {entry.error.detail}", file=sys.stderr)
            continue
        problems = validate(entry.permit, **judged_at)
        for p in problems:
            print(f"{entry.number} ({rows}): {p.severity.value.lower()}: {p.code} at {p.path}: {p.message}", file=sys.stderr)
        if any(p.severity is Severity.ERROR for p in problems):
            refused += 1
        else:
            ready.append((Path(args.output_dir) / f"{quote(entry.number, safe='')}.json", permit_to_json(entry.permit, indent=2)))
    if refused:
        print(f"{ErrorCode.PERMIT_INVALID.name}: {refused} of {len(sheet)} permit(s) in {args.file} refused; nothing written", file=sys.stderr)
        return EXIT_INVALID
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    for path, body in ready:
        path.write_bytes(body)
        print(f"wrote {path}")
    return EXIT_OK


def _judged_at(at: str) -> dict:
    """``--at``: when the time rules (expired, not yet valid, issued in the future) judge the
    permit, as ``rules.validate`` takes it: now (as a submission would be), a date, an instant
    with its offset, or ``none`` for no time rules."""
    from datetime import date, datetime, timezone

    from adapters.permit_json import read_datetime

    if at == "now":
        return {"now": datetime.now(timezone.utc)}
    if at == "none":
        return {}
    if len(at) == 10:
        try:
            return {"today": date.fromisoformat(at)}
        except ValueError:
            raise EpixError(ErrorCode.JSON_MALFORMED, f"--at {at!r} is not a real date (e.g. 2026-07-05).") from None
    return {"now": read_datetime(at, "--at")}


def cmd_sign(args) -> int:
    from keys.xmldsig import Signer

    signer = Signer.from_pem_files(args.key, args.cert, passphrase=_passphrase(args))
    _write(signer.sign(_read(args.file)), args.output)
    return EXIT_OK


def cmd_verify(args) -> int:
    from keys.xmldsig import Verifier

    verifier = Verifier.from_pem_files(cert=args.cert, ca=args.ca)
    verified = verifier.verify(_read(args.file), expected_signer=args.party)
    print(f"verified: signed by {verified.signer} ({verified.certificate.subject.rfc4514_string()})")
    return EXIT_OK


def cmd_serve(args) -> int:
    from aiohttp import web

    from gateway import workers
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.logs import configure_logging

    from gateway.eventloop import new_event_loop, tune_collector

    configure_logging(level=args.log_level, json=args.log_json, cache=True)
    config = load_config(Path(args.config))
    if args.listen_fd is None:
        count = workers.resolve_count(args.workers, config.workers)
        if count > 1:
            sock = workers.listening_socket(config.host, config.port)
            argv = ["serve", "--config", str(args.config), "--log-level", args.log_level, "--loop", args.loop]
            argv += ["--log-json"] if args.log_json else []
            return workers.Supervisor(workers.worker_command(argv, sock.fileno()), count, sock).run()
    tune_collector()
    loop = new_event_loop(args.loop)
    app = create_app(config)
    if args.listen_fd is None:
        web.run_app(app, host=config.host, port=config.port, print=None, shutdown_timeout=5, loop=loop)
    else:  # a worker of a supervisor (gateway/workers.py)
        workers.stop_with_parent(args.supervisor)
        web.run_app(app, sock=workers.inherited_socket(args.listen_fd), print=None, shutdown_timeout=5, loop=loop)
    return EXIT_OK


def cmd_demo(args) -> int:
    from gateway.demo import run_demo

    from gateway.eventloop import run

    summary = run(run_demo(permits=args.permits, json_path=args.json, seed=args.seed, workdir=args.dir, amqp=args.amqp))
    return EXIT_OK if summary["lost"] == 0 and summary["duplicated"] == 0 else EXIT_INVALID


def cmd_report_annual(args) -> int:
    from gateway.config import load_config
    from gateway.customs.report import annual_report

    _write(asyncio.run(annual_report(load_config(Path(args.config)), args.year)).encode("utf-8"), args.out)
    return EXIT_OK


def cmd_purge(args) -> int:
    from gateway.config import load_config
    from gateway.logs import configure_logging
    from gateway.retention import purge, report_lines
    from gateway.store import opened_store

    configure_logging(level="INFO")  # the run's log line on stderr, the report on stdout
    config = load_config(Path(args.config))
    if not config.retention.enabled:
        print(f"{args.config} has no [retention] policy: everything is kept, nothing to purge.")
        return EXIT_OK

    async def run():
        async with opened_store(config.store_url, config.data_dir) as store:
            return await purge(store, config.retention, actor="epix purge", customs=config.customs, dry_run=args.dry_run)

    print("\n".join(report_lines(asyncio.run(run()), config.retention)))
    return EXIT_OK


def cmd_recheck(args) -> int:
    from adapters.exchange_xml import is_party_id
    from gateway.config import load_config
    from gateway.store import opened_store

    config = load_config(Path(args.config))
    if args.issuer is not None and not is_party_id(args.issuer):
        print(f"--issuer {args.issuer!r} is not a party id (letters, digits, '.', '_', '-'; 2 to 64).", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        async with opened_store(config.store_url, config.data_dir) as store:
            return await store.recheck_permits(args.issuer)

    queued = asyncio.run(run())
    whose = f"{args.issuer}'s" if args.issuer else "all"
    print(
        f"{queued:,} permit versions ({whose}) queued for a fresh signature check under the trust in {args.config}; "
        "the gateway makes them in the background, and a verification meanwhile checks its permit itself."
    )
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epix", description="CITES e-permit gateway (epix-gateway).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="keys and certificates").add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    for name, func, what in (
        ("init", cmd_keys_init, "generate a party's signing key and certificate in a key directory"),
        ("renew", cmd_keys_renew, "replace a party's signing key and certificate, keeping the old certificate for what it signed"),
    ):
        one = keys.add_parser(name, help=what)
        one.add_argument("--party", required=True, help="party id, e.g. CH")
        one.add_argument("--algorithm", choices=["rsa2048", "rsa3072", "p256"], default="rsa2048")
        one.add_argument("--dir", required=True, help="key directory (kept out of the repository)")
        one.add_argument("--passphrase-env", help="encrypt the private key with the passphrase in this environment variable")
        one.set_defaults(func=func)

    pki = keys.add_parser("test-pki", help="a throwaway test CA and a key per party (demo and tests only)")
    pki.add_argument("--parties", required=True, help="comma-separated party ids, e.g. CH,FR")
    pki.add_argument("--algorithm", choices=["rsa2048", "rsa3072", "p256"], default="rsa2048")
    pki.add_argument("--dir", required=True)
    pki.set_defaults(func=cmd_keys_test_pki)

    permit = sub.add_parser("permit", help="convert, validate, sign and verify permits").add_subparsers(
        dest="permit_command", required=True, metavar="SUBCOMMAND"
    )
    to_xml = permit.add_parser("to-xml", help="canonical JSON (or any readable XML) to CITESEPermit EPT v2 XML")
    to_xml.add_argument("file")
    to_xml.add_argument("-o", "--output")
    to_xml.set_defaults(func=cmd_to_xml)
    to_json = permit.add_parser("to-json", help="EPT v2, EPT v1 or EPIX SOAP XML to canonical JSON")
    to_json.add_argument("file")
    to_json.add_argument("-o", "--output")
    to_json.set_defaults(func=cmd_to_json)
    validate = permit.add_parser("validate", help="check a permit (XML or JSON) against the schema and the CITES rules")
    validate.add_argument("file")
    validate.add_argument(
        "--at",
        default="now",
        help="judge the time rules (expired, not yet valid) at: now (default, as a submission), a date, "
        "an instant with offset, or none",
    )
    validate.set_defaults(func=cmd_validate)
    from_csv = permit.add_parser(
        "from-csv", help="a spreadsheet (CSV, one row per line item, columns named by JSON field path) to one JSON file per permit"
    )
    from_csv.add_argument("file")
    from_csv.add_argument("-o", "--output-dir", required=True, help="where the permits' JSON files go (named by number)")
    from_csv.add_argument("--at", default="now", help="judge the time rules at: now (default), YYYY-MM-DD, an instant, or none")
    from_csv.set_defaults(func=cmd_from_csv)

    sign = permit.add_parser("sign", help="add an enveloped XML signature")
    sign.add_argument("file")
    sign.add_argument("--key", required=True)
    sign.add_argument("--cert", required=True)
    sign.add_argument("--passphrase-env")
    sign.add_argument("-o", "--output")
    sign.set_defaults(func=cmd_sign)
    verify = permit.add_parser("verify", help="verify a signed permit against a pinned certificate or a CA")
    verify.add_argument("file")
    who = verify.add_mutually_exclusive_group(required=True)
    who.add_argument("--cert", help="the signer's certificate (pinned)")
    who.add_argument("--ca", help="a CA certificate the signer's certificate must chain to")
    verify.add_argument("--party", help="the party that must have signed (default: any trusted)")
    verify.set_defaults(func=cmd_verify)

    serve = sub.add_parser("serve", help="run a gateway (national or hub) from a configuration file")
    serve.add_argument("--config", required=True)
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--log-json", action="store_true", help="JSON log lines (for log shippers)")
    serve.add_argument(
        "--loop", choices=eventloop.CHOICES, default="auto",
        help="event loop: uvloop where installed (auto, the default), or asyncio's own",
    )  # fmt: skip
    serve.add_argument(
        "--workers", metavar="N|auto",
        help="worker processes sharing the port (default: [gateway] workers, else 1; auto: one per core)",
    )  # fmt: skip
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    serve.add_argument("--supervisor", type=int, help=argparse.SUPPRESS)  # the worker's supervisor's pid
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="national gateways, a regional hub, faults and customs on 127.0.0.1 exchanging permits, with a summary")
    demo.add_argument("--permits", type=int, default=300)
    demo.add_argument("--json", help="also write the summary as JSON to this file")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--dir", help="work directory (default: a temporary one)")
    demo.add_argument("--amqp", metavar="URL", help="run the delivery queues on this RabbitMQ (amqp://user:pass@host:5672/)")
    demo.set_defaults(func=cmd_demo)

    purge = sub.add_parser(
        "purge", help="remove what the [retention] policy no longer keeps (final messages, payloads, keys, audit rows)"
    )
    purge.add_argument("--config", required=True, help="the gateway configuration file (its store and [retention])")
    purge.add_argument("--dry-run", action="store_true", help="count what would go and change nothing")
    purge.set_defaults(func=cmd_purge)

    recheck = sub.add_parser(
        "recheck", help="check stored permits' signatures again now (a change of the trusted certificates is caught at start by itself)"
    )
    recheck.add_argument("--config", required=True, help="the gateway configuration file (its store)")
    recheck.add_argument("--issuer", help="only this issuer's permits (party id)")
    recheck.set_defaults(func=cmd_recheck)

    report = sub.add_parser("report", help="reports from the gateway's store").add_subparsers(dest="report_command", required=True, metavar="SUBCOMMAND")
    annual = report.add_parser("annual", help="CITES annual trade report rows (CSV) with actual quantities")
    annual.add_argument("--year", type=int, required=True)
    annual.add_argument("--config", required=True, help="the gateway configuration file (its store is read)")
    annual.add_argument("-o", "--out", help="output file (default stdout)")
    annual.set_defaults(func=cmd_report_annual)

    simulate = sub.add_parser("simulate", help="counterparts and fault injection for tests and demos").add_subparsers(
        dest="simulate_command", required=True, metavar="SUBCOMMAND"
    )
    proxy = simulate.add_parser("proxy", help="a fault-injecting proxy in front of a gateway")
    proxy.add_argument("--target", required=True, help="base URL of the gateway behind the proxy")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--host", default="127.0.0.1")
    proxy.add_argument("--fault", action="append", default=[], metavar="MODE[:TIMES]",
                       help="queue a fault: drop, delay, 5xx, truncate, duplicate, reorder (repeatable)")
    proxy.add_argument("--delay", type=float, default=2.0, help="seconds for delay and reorder")
    proxy.set_defaults(func=cmd_simulate_proxy)
    ma = simulate.add_parser("ma", help="a partner Management Authority's system (webhook endpoint)")
    ma.add_argument("--port", type=int, required=True)
    ma.add_argument("--host", default="127.0.0.1")
    ma.add_argument("--reject-share", type=float, default=0.0)
    ma.add_argument("--delay", type=float, default=0.0)
    ma.set_defaults(func=cmd_simulate_ma)
    customs = simulate.add_parser("customs", help="a customs single window consuming a gateway's inbox")
    customs.add_argument("--gateway", required=True, help="base URL of the gateway")
    customs.add_argument("--token-env", required=True, help="environment variable holding the bearer token")
    customs.set_defaults(func=cmd_simulate_customs)
    return parser


def cmd_simulate_proxy(args) -> int:
    from simulators.faults import serve

    faults = []
    for raw in args.fault:
        mode, _, times = raw.partition(":")
        faults.append((mode, int(times or 1)))
    try:
        asyncio.run(serve(args.target, host=args.host, port=args.port, faults=faults, delay_s=args.delay))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    return 0


def cmd_simulate_ma(args) -> int:
    from simulators.counterparts import PartnerMA

    async def run() -> None:
        ma = await PartnerMA(host=args.host, port=args.port, reject_share=args.reject_share, delay_s=args.delay).start()
        print(f"partner MA simulator on {ma.url} (POST /_sim/down, /_sim/up; GET /_sim/stats)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await ma.stop()

    asyncio.run(run())
    return 0


def cmd_simulate_customs(args) -> int:
    import aiohttp

    from simulators.counterparts import CustomsStub

    token = os.environ.get(args.token_env)
    if not token:
        print(f"environment variable {args.token_env} is not set", file=sys.stderr)
        return EXIT_INVALID

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            await CustomsStub(args.gateway.rstrip("/"), token).run(http)

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EpixError as exc:
        print(f"{exc.code.name}: {exc.detail}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
