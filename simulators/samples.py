"""Realistic sample permits for the demo, the benchmarks and the tests.

Deterministic for a given ``random.Random``: the same seed gives the same permits.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from domain.model import Address, DocumentRef, LineItem, Party, Permit

# (scientific name, common name, appendix, term, unit, description)
SPECIES = (
    ("Crocodylus niloticus", "Nile crocodile", "II", "SKI", "NAR", "Whole skins, tanned"),
    ("Alligator mississippiensis", "American alligator", "II", "LPS", "NAR", "Watchstraps"),
    ("Python reticulatus", "Reticulated python", "II", "SKI", "NAR", "Raw skins"),
    ("Psittacus erithacus", "Grey parrot", "I", "LIV", "NAR", "Live birds, captive bred"),
    ("Dalbergia nigra", "Brazilian rosewood", "I", "TIM", "MTQ", "Sawn timber"),
    ("Aquilaria malaccensis", "Agarwood", "II", "CHP", "KGM", "Wood chips"),
    ("Acipenser baerii", "Siberian sturgeon", "II", "CAV", "KGM", "Caviar in 250 g tins"),
    ("Tridacna gigas", "Giant clam", "II", "SHE", "NAR", "Shells"),
    ("Galanthus nivalis", "Common snowdrop", "II", "BUL", "NAR", "Bulbs"),
    ("Panthera leo", "Lion", "II", "TRO", "NAR", "Hunting trophy: skin and skull"),
    ("Chamaeleo calyptratus", "Veiled chameleon", "II", "LIV", "NAR", "Live animals"),
    ("Swietenia macrophylla", "Big-leaf mahogany", "II", "TIM", "MTQ", "Sawn wood"),
)
# Only current terms are used for new permits; BUL is historical, so replace it at build time.
_CURRENT_TERM_FIX = {"BUL": "LIV"}
# Sources C (bred in captivity) and R (ranched) are for animals, A (artificially propagated) for
# plants (Res. Conf. 12.3); a draw that gives the wrong kind gets the counterpart instead. Mapped
# after the draw, so the random sequence, and every seed's permit otherwise, stays the same.
PLANTS = frozenset({"Dalbergia nigra", "Aquilaria malaccensis", "Galanthus nivalis", "Swietenia macrophylla"})
_PLANT_SOURCE_FIX = {"C": "A", "R": "Y"}
_ANIMAL_SOURCE_FIX = {"A": "C"}

COUNTRY_NAMES = {
    "CH": "Switzerland",
    "FR": "France",
    "KE": "Kenya",
    "DE": "Germany",
    "TH": "Thailand",
    "US": "United States of America",
    "ZA": "South Africa",
    "BR": "Brazil",
    "JP": "Japan",
}
AUTHORITIES = {
    "CH": ("Federal Food Safety and Veterinary Office, CITES Management Authority", "Bern", "Schwarzenburgstrasse 155", "3003"),
    "FR": ("Ministère de la Transition écologique, Autorité de gestion CITES", "Paris", "Tour Séquoia", "92055"),
    "KE": ("Kenya Wildlife Service, CITES Management Authority", "Nairobi", "Langata Road", "00100"),
    "DE": ("Bundesamt für Naturschutz", "Bonn", "Konstantinstrasse 110", "53179"),
    "TH": ("Department of National Parks, Wildlife and Plant Conservation", "Bangkok", "61 Phahonyothin Road", "10900"),
}
PURPOSES = ("T", "T", "T", "Q", "S", "H", "P", "Z")
SOURCES_BY_APPENDIX = {"I": ("C", "D", "A"), "II": ("W", "C", "R", "A"), "III": ("W", "C")}
TRADERS = ("Reptile Leather SA", "Orchid House Ltd", "Zoo Partners GmbH", "Atelier du Cuir", "Safari Trophies Ltd", "Timber Trade Co")


def authority(country: str) -> Party:
    name, city, street, postcode = AUTHORITIES.get(
        country, (f"CITES Management Authority of {country}", "Capital", "Main Street 1", "1000")
    )
    return Party(
        name=name,
        address=Address(street=street, city=city, postcode=postcode, country=country, country_name=COUNTRY_NAMES.get(country)),
    )


def trader(rng: random.Random, country: str) -> Party:
    return Party(
        name=rng.choice(TRADERS),
        address=Address(
            street=f"{rng.randint(1, 200)} Market Street",
            city=AUTHORITIES.get(country, ("", "Capital"))[1],
            postcode=str(rng.randint(1000, 99999)),
            country=country,
            country_name=COUNTRY_NAMES.get(country),
        ),
    )


def make_permit(
    rng: random.Random,
    *,
    issuer: str,
    importer_country: str,
    number: str | None = None,
    doc_type: str = "E",
    issued: datetime | None = None,
    items: int | None = None,
    replaces: str | None = None,
) -> Permit:
    """An export (or re-export) permit from ``issuer`` to ``importer_country`` that passes the rules."""
    issued = issued or datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=rng.randint(0, 20))
    number = number or f"{issuer}{issued:%y}-{rng.randint(0, 999999):06d}"
    lines = []
    for i in range(items or rng.randint(1, 3)):
        sci, common, appendix, term, unit, desc = rng.choice(SPECIES)
        term = _CURRENT_TERM_FIX.get(term, term)
        source = rng.choice(SOURCES_BY_APPENDIX[appendix])
        source = (_PLANT_SOURCE_FIX if sci in PLANTS else _ANIMAL_SOURCE_FIX).get(source, source)
        qty = Decimal(rng.randint(1, 400)) if unit == "NAR" else Decimal(rng.randint(1, 50000)) / Decimal(100)
        origin_kw = {}
        if doc_type == "R":
            origin = rng.choice([c for c in COUNTRY_NAMES if c not in (issuer, importer_country)])
            origin_kw = dict(
                origin_country=origin,
                origin_country_name=COUNTRY_NAMES[origin],
                origin_permit=DocumentRef(number=f"{origin}{rng.randint(10000, 99999)}", issue_date=issued - timedelta(days=400)),
            )
        lines.append(
            LineItem(
                id=chr(ord("A") + i),
                scientific_name=sci,
                common_name=common,
                description=desc,
                term=term,
                appendix=appendix,
                source=source,
                quantity=qty,
                unit=unit,
                marks=(f"TAG-{rng.randint(100000, 999999)}",) if rng.random() < 0.5 else (),
                **origin_kw,
            )
        )
    return Permit(
        number=number,
        type=doc_type,
        authority=authority(issuer),
        issue_date=issued,
        valid_from=issued,
        valid_until=issued + timedelta(days=180 if doc_type in ("E", "R") else 365),
        purpose=rng.choice(PURPOSES),
        exporter=trader(rng, issuer),
        importer=trader(rng, importer_country),
        items=tuple(lines),
        special_conditions=("For live animals, valid only if transported according to the IATA Live Animals Regulations.",)
        if any(li.term == "LIV" for li in lines)
        else (),
        security_stamp=f"{rng.randint(10**9, 10**10 - 1)}",
        replaces=replaces,
        issued_at=AUTHORITIES.get(issuer, ("", "Capital"))[1],
        signed_by="J. Doe, CITES officer",
    )
