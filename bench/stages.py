"""Each pipeline stage on its own, one core, against the raw cryptography it cannot go below.

Stages: build (permit -> CITESEPermit bytes), parse (hardened parser), parse+read (bytes ->
canonical permit), validate with lxml and with xmlschema (an already parsed tree), and for each
key algorithm sign (unsigned bytes -> signed bytes) and verify (signed bytes -> what was signed,
signer pinned). The floor of sign is ``private_key.sign`` over the very SignedInfo bytes our
signer signed; the floor of verify is ``public_key.verify`` of that signature. Inputs cycle
through a pool of sample permits (realistic sizes and shapes, deterministic for the seed).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import asdict
from statistics import mean
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from adapters.cites_read import read_permit
from adapters.cites_write import permit_to_xml
from adapters.ns import DS
from adapters.schema import XmlschemaPermitSchema, permit_schema
from adapters.xmlparse import parse_xml
from bench.measure import FULL, Budget, Timings, measure, measure_pair
from bench.report import fmt, run_metadata, table
from keys.pki import Algorithm, generate_key, issue_party_certificate, make_test_ca
from keys.store import SigningIdentity, TrustStore
from keys.xmldsig import Signer, Verifier
from simulators.samples import make_permit

ISSUER, IMPORTER = "CH", "FR"
POOL_SIZE = 32
SEED = 2026
ALGORITHMS = (Algorithm.RSA2048, Algorithm.RSA3072, Algorithm.P256)

# The issue's targets: (stage, algorithm, field, threshold, wording)
TARGETS = (
    ("sign", Algorithm.RSA2048.value, "ratio", 0.60, "sign rsa2048 >= 60% of raw floor"),
    ("validate-lxml", None, "ops_per_s", 10_000, "lxml validation >= 10,000 docs/s/core"),
)


def _signed_info_and_value(signed: bytes) -> tuple[bytes, bytes]:
    """The canonical SignedInfo bytes a signature covers and its SignatureValue, from a signed document."""
    root = parse_xml(signed)
    signature = root.getroot().find(f"{{{DS}}}Signature")
    signed_info = etree.tostring(signature.find(f"{{{DS}}}SignedInfo"), method="c14n", exclusive=True)
    value = base64.b64decode("".join(signature.findtext(f"{{{DS}}}SignatureValue").split()))
    return signed_info, value


def raw_crypto(key) -> tuple[Callable[[bytes], bytes], Callable[[bytes, bytes], None], Callable[[bytes], bytes]]:
    """(sign, verify, as_der) straight on the key: the same primitives and parameters the signer uses.

    ``as_der`` turns an XML-DSig SignatureValue into what ``verify`` takes (ECDSA: r||s -> DER).
    """
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return (
            lambda data: key.sign(data, pkcs1, sha256),
            lambda sig, data: public.verify(sig, data, pkcs1, sha256),
            lambda value: value,
        )
    ecdsa = ec.ECDSA(hashes.SHA256())

    def as_der(value: bytes) -> bytes:
        half = len(value) // 2
        return encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))

    return (
        lambda data: key.sign(data, ecdsa),
        lambda sig, data: public.verify(sig, data, ecdsa),
        as_der,
    )


def _row(stage: str, algorithm: str | None, timings: Timings, floor: Timings | None = None) -> dict[str, Any]:
    summary = timings.summary_us()
    floor_rate = floor.ops_per_s if floor is not None else None
    return {
        "stage": stage,
        "algorithm": algorithm,
        "ops_per_s": summary["ops_per_s"],
        "floor_ops_per_s": round(floor_rate, 1) if floor_rate is not None else None,
        "ratio": round(timings.ops_per_s / floor_rate, 3) if floor_rate is not None else None,
        # The same ratio from medians: what a loaded machine's preemptions (which land in the
        # mean and the p99) do not move much.
        "ratio_p50": round(floor.percentile(50) / timings.percentile(50), 3) if floor is not None else None,
        "mean_us": summary["mean_us"],
        "p50_us": summary["p50_us"],
        "p99_us": summary["p99_us"],
        "n": summary["n"],
        "floor": floor.summary_us() if floor is not None else None,
    }


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for stage, algorithm, field, threshold, wording in TARGETS:
        row = next((r for r in rows if r["stage"] == stage and r["algorithm"] == algorithm), None)
        value = row[field] if row else None
        out.append(
            {
                "target": wording,
                "stage": stage,
                "algorithm": algorithm,
                "field": field,
                "threshold": threshold,
                "value": value,
                "met": None if value is None else value >= threshold,
            }
        )
    return out


def run(budget: Budget = FULL, *, algorithms: tuple[Algorithm, ...] = ALGORITHMS, log: Callable[[str], None] = print) -> dict[str, Any]:
    rng = random.Random(SEED)
    permits = [make_permit(rng, issuer=ISSUER, importer_country=IMPORTER) for _ in range(POOL_SIZE)]
    docs = [permit_to_xml(p) for p in permits]
    trees = [parse_xml(d) for d in docs]
    k = len(docs)
    lxml_schema, xs_schema = permit_schema(), XmlschemaPermitSchema()
    for tree in trees:  # a benchmark of refusals would measure something else
        lxml_schema.validate(tree)
        xs_schema.validate(tree)

    rows: list[dict[str, Any]] = []

    def stage(name: str, op: Callable[[int], object]) -> None:
        log(f"  {name} ...")
        rows.append(_row(name, None, measure(op, budget)))

    stage("build", lambda i: permit_to_xml(permits[i % k]))
    stage("parse", lambda i: parse_xml(docs[i % k]))
    stage("parse+read", lambda i: read_permit(parse_xml(docs[i % k])))
    stage("validate-lxml", lambda i: lxml_schema.validate(trees[i % k]))
    stage("validate-xmlschema", lambda i: xs_schema.validate(trees[i % k]))

    ca = make_test_ca("EPIX bench CA")
    signed_sizes: dict[str, float] = {}
    signed_info_sizes: dict[str, int] = {}
    for algorithm in algorithms:
        key = generate_key(algorithm)
        cert = issue_party_certificate(ISSUER, key, ca=ca)
        signer = Signer(SigningIdentity.of(key, cert, ISSUER))
        verifier = Verifier(TrustStore.of({ISSUER: [cert]}))
        raw_sign, raw_verify, as_der = raw_crypto(key)

        signed = [signer.sign(d) for d in docs]
        signed_sizes[algorithm.value] = round(mean(map(len, signed)), 1)
        signed_infos: list[bytes] = []
        signatures: list[bytes] = []
        for doc in signed:
            verifier.verify(doc, expected_signer=ISSUER)
            signed_info, value = _signed_info_and_value(doc)
            try:  # proves the floor signs and verifies exactly the bytes the signer signed
                raw_verify(as_der(value), signed_info)
            except InvalidSignature:
                raise RuntimeError(f"{algorithm.value}: the extracted SignedInfo is not what the signer signed") from None
            signed_infos.append(signed_info)
            signatures.append(as_der(value))

        signed_info_sizes[algorithm.value] = len(signed_infos[0])
        log(f"  sign {algorithm.value} ...")
        rows.append(_row("sign", algorithm.value, *measure_pair(lambda i: signer.sign(docs[i % k]), lambda i: raw_sign(signed_infos[i % k]), budget)))
        log(f"  verify {algorithm.value} ...")
        rows.append(
            _row(
                "verify",
                algorithm.value,
                *measure_pair(
                    lambda i: verifier.verify(signed[i % k], expected_signer=ISSUER),
                    lambda i: raw_verify(signatures[i % k], signed_infos[i % k]),
                    budget,
                ),
            )
        )

    sizes = [len(d) for d in docs]
    return {
        "benchmark": "stages",
        "meta": run_metadata(),
        "documents": {
            "count": k,
            "seed": SEED,
            "doc_size_bytes": round(mean(sizes), 1),
            "doc_size_min_bytes": min(sizes),
            "doc_size_max_bytes": max(sizes),
            "signed_doc_size_bytes": signed_sizes,
            "signed_info_bytes": signed_info_sizes,
        },
        "budget": asdict(budget),
        "notes": [
            "One thread, one call at a time: ops_per_s is per core (1 / mean call time).",
            "Times are per call with time.perf_counter, after a warm-up; a stage and its floor alternate in slices of the same run.",
            "validate-* take an already parsed tree; parse is its own row. sign takes unsigned bytes and includes the hardened parse; "
            "verify takes signed bytes and includes parse, profile checks, pinned-trust check and signxml.",
            "ratio = ops_per_s / floor_ops_per_s (means, the figure the targets use); ratio_p50 = floor p50 / stage p50, "
            "less sensitive to other processes on the machine (see meta.loadavg).",
            "floor = raw cryptography on the same key: private_key.sign / public_key.verify over the SignedInfo bytes the signer signed "
            "(RSA PKCS#1 v1.5 SHA-256, ECDSA P-256 SHA-256).",
        ],
        "stages": rows,
        "targets": _targets(rows),
    }


def render(result: dict[str, Any]) -> str:
    verdicts = {(t["stage"], t["algorithm"]): t for t in result["targets"]}
    headers = ["stage", "algorithm", "ops/s", "floor ops/s", "ratio", "ratio p50", "mean us", "p50 us", "p99 us", "n", "target"]
    rows = []
    for r in result["stages"]:
        target = verdicts.get((r["stage"], r["algorithm"]))
        verdict = "" if target is None else f"{'PASS' if target['met'] else 'MISS'} ({target['target']})"
        rows.append(
            [
                r["stage"],
                r["algorithm"] or "-",
                fmt(r["ops_per_s"]),
                fmt(r["floor_ops_per_s"]),
                fmt(r["ratio"], ".2f"),
                fmt(r["ratio_p50"], ".2f"),
                fmt(r["mean_us"], ",.1f"),
                fmt(r["p50_us"], ",.1f"),
                fmt(r["p99_us"], ",.1f"),
                fmt(r["n"], "d"),
                verdict,
            ]
        )
    docs = result["documents"]
    meta = result["meta"]
    head = (
        f"Stages, one core: permit {docs['doc_size_bytes']:.0f} B mean ({docs['doc_size_min_bytes']}-{docs['doc_size_max_bytes']}), "
        f"Python {meta['python']}, lxml {meta['lxml']}, cryptography {meta['cryptography']} ({meta['openssl']}), signxml {meta['signxml']}"
    )
    return head + "\n" + table(headers, rows, right={2, 3, 4, 5, 6, 7, 8, 9})
