"""Smoke tests of the benchmarks: each runs with tiny counts and gives the JSON shape we publish.

Never about the figures themselves (wall-clock numbers are not a test's business), only that
every stage is there, the fields mean what they say and the targets are judged.
"""

from __future__ import annotations

import json
import math

import pytest

import bench.__main__ as bench_main
from bench import e2e, stages
from bench.measure import Budget, Timings, measure, measure_pair

TINY = Budget(seconds=0.0, min_n=3, warmup=1, rounds=1)
STAGE_FIELDS = {"stage", "algorithm", "ops_per_s", "floor_ops_per_s", "ratio", "mean_us", "p50_us", "p99_us", "n"}
META_FIELDS = {"python", "cpu_count", "lxml", "cryptography", "signxml", "date"}


# --------------------------------------------------------------------------- measuring


def test_percentiles_are_nearest_rank():
    t = Timings(tuple(float(x) for x in range(1, 101)))  # 1..100 s
    assert (t.percentile(50), t.percentile(99), t.percentile(100)) == (50.0, 99.0, 100.0)
    assert t.mean == 50.5 and t.ops_per_s == pytest.approx(1 / 50.5)
    assert Timings((7.0,)).percentile(99) == 7.0


def test_measure_pair_interleaves_op_and_floor_and_honours_the_counts():
    calls: list[str] = []
    budget = Budget(seconds=0.0, min_n=4, warmup=2, rounds=2)
    op_t, floor_t = measure_pair(lambda i: calls.append(f"op{i}"), lambda i: calls.append(f"floor{i}"), budget)
    assert op_t.n == floor_t.n == 4
    # warm-up first (indices restart), then slices alternate: op, floor, op, floor
    assert calls == ["op0", "op1", "floor0", "floor1", "op0", "op1", "floor0", "floor1", "op2", "op3", "floor2", "floor3"]


def test_measure_stops_at_max_n_even_with_time_left():
    seen: list[int] = []
    t = measure(seen.append, Budget(seconds=60.0, min_n=1, warmup=0, rounds=1, max_n=5))
    assert t.n == 5 and seen == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def stage_result():
    return stages.run(TINY, log=lambda _: None)


def test_stages_cover_every_stage_and_algorithm(stage_result):
    got = {(r["stage"], r["algorithm"]) for r in stage_result["stages"]}
    assert got == {
        ("build", None),
        ("parse", None),
        ("parse+read", None),
        ("validate-lxml", None),
        ("validate-xmlschema", None),
        *((s, a) for s in ("sign", "verify") for a in ("rsa2048", "rsa3072", "p256")),
    }


def test_stage_rows_have_the_published_fields(stage_result):
    for row in stage_result["stages"]:
        assert STAGE_FIELDS <= row.keys(), row["stage"]
        assert row["n"] >= TINY.min_n
        assert row["ops_per_s"] > 0 and row["p50_us"] <= row["p99_us"]
        if row["stage"] in ("sign", "verify"):
            assert row["floor_ops_per_s"] > 0
            assert row["ratio"] == pytest.approx(row["ops_per_s"] / row["floor_ops_per_s"], rel=0.01)
        else:
            assert row["floor_ops_per_s"] is None and row["ratio"] is None


def test_stages_judge_the_two_targets(stage_result):
    targets = {(t["stage"], t["algorithm"]): t for t in stage_result["targets"]}
    assert targets.keys() == {("sign", "rsa2048"), ("validate-lxml", None)}
    sign = targets[("sign", "rsa2048")]
    row = next(r for r in stage_result["stages"] if (r["stage"], r["algorithm"]) == ("sign", "rsa2048"))
    assert sign["value"] == row["ratio"] and sign["threshold"] == 0.6 and sign["met"] is (row["ratio"] >= 0.6)
    assert targets[("validate-lxml", None)]["threshold"] == 10_000


def test_stages_metadata_and_document_sizes(stage_result):
    assert META_FIELDS <= stage_result["meta"].keys()
    docs = stage_result["documents"]
    assert docs["doc_size_min_bytes"] <= docs["doc_size_bytes"] <= docs["doc_size_max_bytes"]
    # signing adds the signature: every algorithm's signed document is larger
    assert all(size > docs["doc_size_bytes"] for size in docs["signed_doc_size_bytes"].values())
    json.dumps(stage_result)  # everything is plain JSON


def test_stage_table_names_every_stage_with_a_verdict(stage_result):
    text = stages.render(stage_result)
    for row in stage_result["stages"]:
        assert row["stage"] in text
    assert text.count("PASS") + text.count("MISS") == 2


# --------------------------------------------------------------------------- e2e


def test_exchange_floor_is_three_signs_and_three_verifies():
    floor = e2e.exchange_floor(TINY)
    sign, verify = 1 / floor["sign_ops_per_s"], 1 / floor["verify_ops_per_s"]
    assert floor["floor_exchanges_per_s"] == pytest.approx(1 / (3 * sign + 3 * verify), rel=0.01)
    # Each gateway on its own core: the sender's 2 signatures + 1 verification bound the pair.
    assert floor["floor_two_cores_exchanges_per_s"] == pytest.approx(1 / (2 * sign + verify), rel=0.01)
    assert floor["floor_exchanges_per_s"] < floor["floor_two_cores_exchanges_per_s"] < 2 * floor["floor_exchanges_per_s"]
    assert floor["hub_path"]["floor_one_core_per_s"] < floor["floor_exchanges_per_s"]


async def test_e2e_skips_postgresql_it_cannot_reach():
    settings = e2e.Settings(
        pg_dsn="postgresql://postgres@127.0.0.1:1/none", stores=("postgresql",), paths=("direct",), floor_budget=TINY
    )
    result = await e2e.run(settings, log=lambda _: None)
    [entry] = result["runs"]
    assert "unreachable" in entry["skipped"] and not result["errors"]
    assert "unreachable" in e2e.render(result)


async def test_e2e_skips_rabbitmq_it_cannot_reach():
    settings = e2e.Settings(amqp_url="amqp://guest:guest@127.0.0.1:1/", stores=("sqlite",), paths=("rabbitmq",), floor_budget=TINY)
    result = await e2e.run(settings, log=lambda _: None)
    [entry] = result["runs"]
    assert entry["path"] == "rabbitmq" and "RabbitMQ unreachable" in entry["skipped"] and not result["errors"]
    assert "RabbitMQ unreachable" in e2e.render(result)


def _assert_delivered_everything(result, path: str) -> None:
    assert result["errors"] == []
    [entry] = [r for r in result["runs"] if r["path"] == path]
    assert entry["peak"]["acknowledged"] == 6 and entry["paced"]["acknowledged"] == 3
    for p in ("peak", "paced"):
        latency = entry[p]["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        assert entry[p]["throughput_per_s"] > 0
        # every gateway process is accounted for (CPU is counted in clock ticks: a tiny pass may show 0)
        parties = {"CH", "FR", "HUB"} if path == "hub" else {"CH", "FR"}
        assert parties <= entry[p]["cpu_ms_per_exchange"].keys()
        assert all(entry[p]["cpu_ms_per_exchange"][party] >= 0 for party in parties)
    assert sum(entry["peak"]["cpu_ms_per_exchange"][party] for party in parties) > 0
    floor = result["floor"]
    assert entry["ratio_to_floor"] == pytest.approx(entry["peak"]["throughput_per_s"] / floor["floor_exchanges_per_s"], abs=1e-3)
    assert entry["ratio_to_two_core_floor"] == pytest.approx(
        entry["peak"]["throughput_per_s"] / floor["floor_two_cores_exchanges_per_s"], abs=1e-3
    )
    assert [t["threshold"] for t in entry["targets"]] == [0.40, 100.0]
    assert math.isclose(entry["paced"]["target_rate_per_s"], entry["peak"]["throughput_per_s"] / 2, rel_tol=0.01)
    json.dumps(result)


TINY_RUN = dict(permits=6, paced_permits=3, warmup=1, concurrency=2, stores=("sqlite",), floor_budget=TINY, timeout_s=60)


async def test_e2e_direct_on_sqlite_delivers_every_permit_between_gateway_processes():
    result = await e2e.run(e2e.Settings(paths=("direct",), **TINY_RUN), log=lambda _: None)
    _assert_delivered_everything(result, "direct")
    assert any("epix serve" in note for note in result["notes"])


async def test_e2e_through_the_hub_counts_delivery_at_the_hub():
    result = await e2e.run(e2e.Settings(paths=("hub",), **TINY_RUN), log=lambda _: None)
    _assert_delivered_everything(result, "hub")
    [entry] = result["runs"]
    # Counted at the hub (FR's receipt there), with CH's view of the hub's receipt beside it. The
    # two are not ordered: once the hub has stored a message, its answer to CH and its push to FR
    # race (comparing their medians failed on a loaded machine).
    peak = entry["peak"]
    assert peak["latency_ms"]["p50"] is not None and peak["sender_ack_latency_ms"]["p50"] is not None
    assert peak["store_latency_ms"]["p50"] > 0  # FR's receipt reached the hub after CH made the message


async def test_e2e_over_rabbitmq_delivers_and_deletes_its_queues():
    from tests.rabbit import require_rabbit

    await require_rabbit()
    result = await e2e.run(e2e.Settings(paths=("rabbitmq",), **TINY_RUN), log=lambda _: None)
    _assert_delivered_everything(result, "rabbitmq")
    [entry] = result["runs"]
    assert entry["queue_prefix"].startswith("epixbench-") and "queues_left" not in entry
    # The broker runs on this machine here: its CPU is the exchange's too, and is shown.
    assert "RabbitMQ server" in entry["peak"]["cpu_ms_per_exchange"]


async def test_e2e_with_two_workers_per_gateway_counts_every_worker():
    result = await e2e.run(e2e.Settings(paths=("direct",), workers=2, **TINY_RUN), log=lambda _: None)
    _assert_delivered_everything(result, "direct")
    assert result["settings"]["workers"] == 2


def test_cpu_report_counts_each_server_process_once_and_one_started_meanwhile_whole():
    before = {"CH": 1.0, "load generator": 0.5, "PostgreSQL server": {10: 2.0, 11: 1.0}}
    after = {"CH": 1.3, "load generator": 0.6, "PostgreSQL server": {10: 2.2, 11: 1.1, 12: 0.1}}
    report = e2e._cpu_report(before, after, exchanges=100, wall_s=1.0)
    assert report["cpu_ms_per_exchange"] == pytest.approx({"CH": 3.0, "load generator": 1.0, "PostgreSQL server": 4.0})
    assert report["cpu_cores_busy"]["PostgreSQL server"] == pytest.approx(0.4)


# --------------------------------------------------------------------------- command line


def test_help_names_the_benchmarks(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_main.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "stages" in out and "e2e" in out and "--quick" in out and "--json" in out


def test_command_line_writes_json_where_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_main, "QUICK", TINY)
    path = tmp_path / "out" / "stages.json"
    assert bench_main.main(["stages", "--quick", "--json", str(path)]) == 0
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["benchmark"] == "stages" and written["elapsed_s"] >= 0
    assert "validate-lxml" in capsys.readouterr().out


async def test_customs_bench_reuses_its_cached_stores_and_their_keys(tmp_path):
    from bench import customs

    settings = customs.Settings(sizes=(50, 200), seconds=0.2, concurrency=4, warmup_s=0.05, rounds=1, cache_dir=tmp_path)
    logged: list[str] = []
    first = await customs.run(settings, log=logged.append)
    assert sum("building the store" in line for line in logged) == 2
    # The second run builds nothing, and its gateway trusts what the stored checks were made
    # under: had it queued them again, the run would have stopped (customs._rechecks_queued).
    logged.clear()
    second = await customs.run(settings, log=logged.append)
    assert not any("building the store" in line for line in logged)
    for result in (first, second):
        assert result["errors"] == 0 and [s["permits"] for s in result["sizes"]] == [50, 200]
        assert all(s["requests"] > 0 for s in result["sizes"])
