"""``python -m bench [stages|e2e|all] [--quick] [--json PATH]``: the project's own benchmark.

Prints a table per benchmark and writes its JSON to ``bench/results/<name>.json`` (or to
``--json``; with ``all`` and ``--json``, the path gets ``-stages`` / ``-e2e`` before its suffix).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import customs, e2e, stages
from bench.measure import FULL, QUICK
from bench.report import default_json_path, write_json
from gateway.eventloop import run


def _json_path(name: str, given: Path | None, several: bool) -> Path:
    if given is None:
        return default_json_path(name)
    if several:
        return given.with_name(f"{given.stem}-{name}{given.suffix or '.json'}")
    return given


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of epix-gateway: pipeline stages against the raw-crypto floor, and end-to-end exchanges.",
    )
    parser.add_argument(
        "which",
        nargs="?",
        choices=("stages", "e2e", "customs", "all"),
        default="all",
        help="stages: one core per stage vs raw crypto (about 45 s); e2e: gateway processes over HTTP (direct, RabbitMQ, hub), SQLite and PostgreSQL; customs; all (default: stages and e2e)",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds per benchmark: smoke numbers, not results")
    parser.add_argument("--json", type=Path, metavar="PATH", help="where to write the JSON (default bench/results/<name>.json)")
    parser.add_argument(
        "-n", "--permits", type=int,
        help="e2e: permits per peak pass (default 1000, --quick 100); customs: permits stored, compared with 10,000 (default 1,000,000)",
    )
    parser.add_argument("-c", "--concurrency", type=int, help="e2e: concurrent clients at peak (default 32, --quick 16)")
    parser.add_argument(
        "--workers", type=int,
        help="e2e: worker processes per gateway (epix serve --workers; default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--paths",
        default=",".join(e2e.PATHS),
        help="e2e: which paths, comma-separated, of %(default)s (direct: CH -> FR; rabbitmq: delivery queues on RabbitMQ; hub: CH -> HUB -> FR)",
    )
    parser.add_argument(
        "--amqp",
        default=e2e.DEFAULT_AMQP_URL,
        help="e2e: RabbitMQ URL for the rabbitmq path (queues are deleted after); 'none' skips it (default $EPIX_TEST_AMQP_URL or %(default)s)",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("EPIX_TEST_PG_DSN", e2e.DEFAULT_PG_DSN),
        help="e2e: PostgreSQL DSN (schemas are created and dropped); 'none' skips PostgreSQL (default $EPIX_TEST_PG_DSN or %(default)s)",
    )
    args = parser.parse_args(argv)
    names = ("stages", "e2e") if args.which == "all" else (args.which,)
    failed = False
    for name in names:
        started = time.perf_counter()
        _log(f"{name}{' (quick)' if args.quick else ''} ...")
        if name == "customs":  # customs verification with many permits stored vs a bare handler
            settings = customs.Settings.quick() if args.quick else customs.Settings()
            result = run(customs.run(settings.with_largest(args.permits), log=_log))
            text = customs.render(result)
            failed = failed or bool(result.get("errors"))
        elif name == "stages":
            result = stages.run(QUICK if args.quick else FULL, log=_log)
            text = stages.render(result)
        else:
            settings = e2e.Settings.quick() if args.quick else e2e.Settings()
            paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
            unknown = [p for p in paths if p not in e2e.PATHS]
            if unknown:
                parser.error(f"--paths: unknown path(s) {', '.join(unknown)}; choose from {', '.join(e2e.PATHS)}")
            settings = settings.with_overrides(
                permits=args.permits,
                concurrency=args.concurrency,
                pg_dsn=None if args.pg == "none" else args.pg,
                amqp_url=None if args.amqp == "none" else args.amqp,
                paths=paths,
                workers=args.workers,
            )
            result = run(e2e.run(settings, log=_log))
            text = e2e.render(result)
            failed = failed or bool(result.get("errors"))
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        print(text)
        path = write_json(result, _json_path(name, args.json, len(names) > 1))
        print(f"({result['elapsed_s']} s; JSON: {path})\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
