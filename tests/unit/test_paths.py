"""gateway/paths.py: every number the rules accept survives the trip into a URL a client sends and
back out of aiohttp's router, to the route it was meant for; what no permit can be is refused."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from domain import ledger, rules
from domain.errors import EpixError, ErrorCode
from gateway import paths


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


def _router() -> web.UrlDispatcher:
    app = web.Application()
    # Registered in the order and with the tails the gateway uses, so the longest routes compete.
    for tail in ("", "/xml", "/cancel", "/quantities", "/write-offs", "/history"):
        app.router.add_get(paths.PERMIT + tail, _handler)
    app.router.add_get(paths.VERIFICATION, _handler)
    app.router.add_get(paths.PERMIT + "/write-offs/" + paths.DECLARATION + "/reversal", _handler)
    app.freeze()
    return app.router


ROUTER = _router()


async def _resolve(url: str):
    # As a client sends it: yarl requotes the string (keeping %2F), the server receives raw_path_qs.
    raw = URL("http://gw" + url).raw_path_qs
    match = await ROUTER.resolve(make_mocked_request("GET", raw))
    return match.route.resource.canonical, dict(match), make_mocked_request("GET", raw, match_info=dict(match))


numbers = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=rules.MAX_NUMBER_LENGTH)


@settings(max_examples=300)
@given(number=numbers, tail=st.sampled_from(["", "xml", "quantities"]))
async def test_every_acceptable_number_comes_back_from_its_url_unchanged(number, tail):
    assume(rules.number_problems(number) == [])
    route, info, request = await _resolve(paths.permit_url("CH", number, *([tail] if tail else [])))
    assert route == "/v1/permits/{issuer}/{number}" + (f"/{tail}" if tail else "") and info == {"issuer": "CH", "number": number}
    assert paths.permit_key(request) == ("CH", number)
    route, info, _ = await _resolve(paths.verification_url("CH", number))
    assert route == "/v1/verifications/{issuer}/{number}" and info["number"] == number


@pytest.mark.parametrize(
    ("number", "encoded"),
    [
        ("KWS/CITES/2026/0012", "KWS%2FCITES%2F2026%2F0012"),
        ("21 CH 012345", "21%20CH%20012345"),
        ("FR-2106#9", "FR-2106%239"),
        ("Q?x=1&y=2", "Q%3Fx%3D1%26y%3D2"),
        ("50%", "50%25"),
        ("50%2F", "50%252F"),  # a number that looks encoded is encoded again, and decoded once
        ("{ÖST}", "%7B%C3%96ST%7D"),  # braces would not match aiohttp's default {var} pattern
        ("a-b_c.d~e", "a-b_c.d~e"),
    ],
)
async def test_a_number_is_one_encoded_segment(number, encoded):
    assert paths.permit_url("KE", number) == f"/v1/permits/KE/{encoded}"
    assert paths.permit_url("KE", number, "write-offs", "D-1", "reversal") == f"/v1/permits/KE/{encoded}/write-offs/D-1/reversal"
    assert paths.verification_url("KE", number) == f"/v1/verifications/KE/{encoded}"
    _, info, _ = await _resolve(paths.permit_url("KE", number, "xml"))
    assert info["number"] == number


async def test_a_declaration_is_one_segment_too():
    route, info, _ = await _resolve(paths.permit_url("FR", "A/B", "write-offs", paths.segment("FR/2026 7"), "reversal"))
    assert route.endswith("/reversal") and info == {"issuer": "FR", "number": "A/B", "declaration": "FR/2026 7"}


async def test_the_canonical_routes_stay_the_documented_ones():
    canonical = {r.canonical for r in ROUTER.resources()}
    assert "/v1/permits/{issuer}/{number}" in canonical
    assert "/v1/permits/{issuer}/{number}/write-offs/{declaration}/reversal" in canonical


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/v1/permits/CH/CH26%00001", "U+0000"),
        ("/v1/permits/CH/%20CH26", "begins or ends with a space"),
        ("/v1/permits/CH/" + "9" * 65, "at most 64"),
        ("/v1/permits/ch/CH26-1", "ISO 3166-1"),
        ("/v1/permits/HUB-AF/CH26-1", "ISO 3166-1"),
    ],
)
async def test_what_no_permit_can_be_is_not_found_with_the_reason(url, words):
    _, _, request = await _resolve(url)
    with pytest.raises(EpixError) as caught:
        paths.permit_key(request)
    assert caught.value.code is ErrorCode.NOT_FOUND and words in caught.value.detail


@pytest.mark.parametrize(
    ("segment", "words"),
    [("%00", "U+0000"), ("D%20", "begins or ends with a space"), ("D" * 65, "at most 64"), ("A%20%20B", "two spaces")],
)
async def test_a_declaration_no_write_off_can_have_is_not_found_with_the_reason(segment, words):
    _, info, request = await _resolve(f"/v1/permits/FR/CH26-1/write-offs/{segment}/reversal")
    with pytest.raises(EpixError) as caught:
        paths.declaration_key(request)
    assert caught.value.code is ErrorCode.NOT_FOUND and words in caught.value.detail


async def test_a_declaration_the_write_off_body_accepts_comes_back_from_its_url():
    for reference in ("25FR00012345", "FR/2026 Nº 7", "50%", "{A}"):
        assert ledger.declaration_problems(reference) == []
        _, _, request = await _resolve(paths.permit_url("FR", "CH26-1", "write-offs", paths.segment(reference), "reversal"))
        assert paths.declaration_key(request) == reference
