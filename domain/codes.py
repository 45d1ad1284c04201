"""The code lists a CITES permit is written in: purposes, sources, Appendices, document types,
countries, trade terms and units.

The codes are facts written into this module (standard library only, nothing read at run time).
Their source of truth is the CITES annual-report Guidelines (Notification No. 2021/044, May 2021)
as tabled in *A guide to using the CITES Trade Database*, version 9 (CITES Secretariat and
UNEP-WCMC, 2022), Annexes 2 and 3; countries are ISO 3166-1 alpha-2. ``tests/unit/test_codes.py``
compares every list here with the compiled copies in ``shared/ref/cites-codes`` so drift is caught.

Everything public is immutable (``frozenset`` or a read-only mapping): the rules share these
objects on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Term:
    """A CITES trade-term code (box 9: the description of the specimens)."""

    code: str
    description: str
    # The units the Guidelines prefer for this term. UNVERIFIED: recalled, not extracted from the
    # Guidelines (see shared/ref/cites-codes/SOURCES.md). A hint for forms, never a rule.
    preferred_units: tuple[str, ...] = ()
    alternative_units: tuple[str, ...] = ()
    historical: bool = False
    note: str | None = None  # for a historical term: where it was last listed, and why it went
    replaced_by: str | None = None  # the current term that took its place, when there is one


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit of quantity (box 11). Current units are UN/ECE Recommendation 20 common codes."""

    code: str
    description: str
    historical: bool = False
    maps_to: str | None = None  # for a historical unit: the current unit it converts to
    conversion: str | None = None  # how: "/100", "x1000", "recoded" (UNEP-WCMC TradePlus, not a CITES rule)


def _by_code(entries) -> Mapping:
    return MappingProxyType({e.code: e for e in entries})


# --- Purpose of the transaction (box 5a), Res. Conf. 12.3 and the Guidelines ------------------

PURPOSES: Mapping[str, str] = MappingProxyType(
    {
        "B": "Breeding in captivity or artificial propagation",
        "E": "Educational",
        "G": "Botanical garden",
        "H": "Hunting trophy",
        "L": "Law enforcement/judicial/forensic",
        "M": "Medical (including biomedical research)",
        "N": "Reintroduction or introduction into the wild",
        "P": "Personal",
        "Q": "Circus or travelling exhibition",
        "S": "Scientific",
        "T": "Commercial",
        "Z": "Zoo",
    }
)

# --- Source of the specimens (box 10), wording of Res. Conf. 12.3 (Rev. CoP18) ----------------

SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "A": "Plants that are artificially propagated in accordance with Resolution Conf. 11.11 (Rev. CoP18), "
        "as well as parts and derivatives thereof, exported under the provisions of Article VII, paragraph 5 "
        "(specimens of species included in Appendix I that have been propagated artificially for "
        "non-commercial purposes and specimens of species included in Appendices II and III)",
        "C": "Animals bred in captivity in accordance with Resolution Conf. 10.16 (Rev.), as well as parts and "
        "derivatives thereof, exported under the provisions of Article VII, paragraph 5",
        "D": "Appendix-I animals bred in captivity for commercial purposes in operations included in the "
        "Secretariat's Register, in accordance with Resolution Conf. 12.10 (Rev. CoP15), and Appendix-I plants "
        "artificially propagated for commercial purposes, as well as parts and derivatives thereof, exported "
        "under the provisions of Article VII, paragraph 4, of the Convention",
        "F": "Animals born in captivity (F1 or subsequent generations) that do not fulfil the definition of "
        "'bred in captivity' in Resolution Conf. 10.16 (Rev.), as well as parts and derivatives thereof",
        "I": "Confiscated or seized specimens (may be used with another code)",
        "O": "Pre-Convention specimens",
        "R": "Ranched specimens: specimens of animals reared in a controlled environment, taken as eggs or "
        "juveniles from the wild, where they would otherwise have had a very low probability of surviving "
        "to adulthood",
        "U": "Source unknown (must be justified)",
        "W": "Specimens taken from the wild",
        "X": 'Specimens taken in "the marine environment not under the jurisdiction of any State"',
        "Y": 'Specimens of plants that fulfil the definition for "assisted production" in Resolution Conf. '
        "11.11 (Rev. CoP18) as well as parts and derivatives thereof",
    }
)

# --- Appendix (box 10) and document type (box 1) ---------------------------------------------

APPENDICES: Mapping[str, str] = MappingProxyType(
    {
        "I": "Appendix I: species threatened with extinction (Article III)",
        "II": "Appendix II: species whose trade must be controlled (Article IV)",
        "III": "Appendix III: species listed by a Party that needs cooperation to control trade (Article V)",
    }
)

DOCUMENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "E": "Export permit",
        "R": "Re-export certificate",
        "I": "Import permit",
        "O": "Other certificate",
    }
)

# --- Countries: ISO 3166-1 alpha-2 ------------------------------------------------------------

# All 249 officially assigned codes (ISO 3166 Maintenance Agency, as shipped in Debian iso-codes).
COUNTRIES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
    GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
    KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
    MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
    TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
    ZW
    """.split()
)

# ISO 3166-1 leaves these to users. The CITES Trade Database writes XX for "unknown" (origin of
# seized specimens, for instance), so the rules warn on them rather than refuse them.
USER_ASSIGNED_COUNTRIES: frozenset[str] = frozenset(
    ["AA", "ZZ"]
    + [f"Q{c}" for c in "MNOPQRSTUVWXYZ"]
    + [f"X{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
)


def is_user_assigned_country(code: str) -> bool:
    return code in USER_ASSIGNED_COUNTRIES


# --- Trade terms (box 9): the 91 codes of the May 2021 Guidelines -----------------------------


def _t(code: str, description: str, preferred: tuple[str, ...], alternative: tuple[str, ...]) -> Term:
    return Term(code, description, preferred, alternative)


def _h(code: str, description: str, note: str, replaced_by: str | None = None) -> Term:
    return Term(code, description, historical=True, note=note, replaced_by=replaced_by)


TERMS: Mapping[str, Term] = _by_code(
    [
        _t("BAL", "Baleen", ("KGM",), ("NAR",)),
        _t("BAR", "Bark", ("KGM",), ()),
        _t("BOD", "Body", ("NAR",), ("KGM",)),
        _t("BON", "Bones", ("KGM",), ("NAR",)),
        _t("CAL", "Calipee", ("KGM",), ()),
        _t("CAP", "Carapace", ("NAR",), ("KGM",)),
        _t("CAR", "Carving", ("KGM",), ("NAR",)),
        _t("BOC", "Carving – bone", ("KGM",), ("NAR",)),
        _t("HOC", "Carving – horn", ("KGM",), ("NAR",)),
        _t("IVC", "Carving – ivory (worked ivory)", ("KGM",), ("NAR",)),
        _t("CAV", "Caviar", ("KGM",), ()),
        _t("CHP", "Chips (woodchips)", ("KGM",), ()),
        _t("CLA", "Claw", ("NAR",), ("KGM",)),
        _t("CLO", "Cloth", ("MTK",), ("KGM",)),
        _t("COR", "Coral (raw)", ("KGM",), ("NAR",)),
        # COS meant "coral sand" before 2017 (now CSD, historical); since 2017 it means cosmetics.
        _t("COS", "Cosmetics", ("GRM",), ("MLT",)),
        _t("CUL", "Culture", ("NAR",), ()),
        _t("DER", "Derivatives", ("KGM", "LTR"), ()),
        _t("DPL", "Dried plant", ("NAR",), ("KGM",)),
        _t("EAR", "Ear", ("NAR",), ()),
        _t("EGG", "Egg", ("NAR",), ("KGM",)),
        _t("EGL", "Egg (live)", ("NAR",), ()),
        _t("ESH", "Eggshell", ("GRM", "KGM"), ()),
        _t("EXT", "Extract", ("KGM",), ("LTR",)),
        _t("FEA", "Feather", ("KGM",), ("NAR",)),
        _t("FIB", "Fibre", ("KGM",), ("MTR",)),
        _t("FIN", "Fin", ("KGM",), ()),
        _t("FIG", "Fingerlings", ("KGM",), ("NAR",)),
        _t("FLO", "Flower", ("KGM",), ()),
        _t("FPT", "Flower pot", ("NAR",), ()),
        _t("LEG", "Frog legs", ("KGM",), ()),
        _t("FRU", "Fruit", ("KGM",), ()),
        _t("FOO", "Foot", ("NAR",), ()),
        _t("FPL", "Fur products (large)", ("NAR",), ()),
        _t("FPS", "Fur products (small)", ("NAR",), ()),
        _t("GAL", "Gall", ("KGM",), ()),
        _t("GAB", "Gall bladder", ("NAR",), ("KGM",)),
        _t("GAR", "Garment", ("NAR",), ()),
        _t("GEN", "Genitalia", ("KGM",), ("NAR",)),
        _t("GIL", "Gill plates", ("KGM",), ("NAR",)),
        _t("GRS", "Graft rootstock", ("NAR",), ()),
        _t("HAI", "Hair", ("KGM",), ("GRM",)),
        _t("HAP", "Hair products", ("NAR",), ("GRM",)),
        _t("HOR", "Horn", ("NAR",), ("KGM",)),
        _t("JWL", "Jewellery", ("NAR",), ("GRM",)),
        _t("IJW", "Jewellery – ivory (worked ivory)", ("NAR",), ("GRM",)),
        _t("KNL", "Kernel", ("KGM",), ()),
        _t("LPL", "Leather product (large)", ("NAR",), ()),
        _t("LPS", "Leather product (small)", ("NAR",), ()),
        _t("LIV", "Live", ("NAR",), ()),
        _t("LVS", "Leaf", ("KGM",), ("NAR",)),
        _t("LOG", "Logs", ("MTQ",), ()),
        _t("MEA", "Meat", ("KGM",), ()),
        _t("MED", "Medicine", ("KGM", "LTR"), ()),
        _t("MUS", "Musk", ("GRM",), ()),
        _t("OIL", "Oil", ("KGM",), ("LTR",)),
        _t("PRL", "Pearl", ("NAR",), ()),
        _t("KEY", "Piano keys (worked ivory)", ("NAR",), ()),
        _t("BOP", "Piece – bone", ("KGM",), ()),
        _t("HOP", "Piece – horn", ("KGM",), ()),
        _t("IVP", "Piece – ivory (raw ivory)", ("KGM",), ()),
        _t("PLA", "Plate", ("MTK",), ()),
        _t("PLY", "Plywood", ("MTK",), ("MTQ",)),
        _t("POW", "Powder", ("KGM",), ()),
        _t("PUP", "Pupae", ("NAR",), ()),
        _t("ROO", "Root", ("NAR",), ("KGM",)),
        _t("RUG", "Rug", ("NAR",), ()),
        _t("ROS", "Sawfish rostrum", ("NAR",), ("KGM",)),
        _t("SAW", "Sawn wood", ("MTQ",), ()),
        _t("SCA", "Scale", ("KGM",), ()),
        _t("SEE", "Seed", ("KGM",), ()),
        _t("SHE", "Shell", ("NAR",), ("KGM",)),
        _t("SID", "Side", ("NAR",), ()),
        _t("SKE", "Skeleton", ("NAR",), ()),
        _t("SKI", "Skin", ("NAR",), ()),
        _t("SKP", "Skin piece", ("NAR",), ()),
        _t("SKU", "Skull", ("NAR",), ()),
        _t("SOU", "Soup", ("KGM",), ("LTR",)),
        _t("SPE", "Specimen (scientific)", ("KGM", "LTR", "MLT"), ()),
        _t("STE", "Stem", ("NAR",), ("KGM",)),
        _t("SWI", "Swim bladder", ("KGM",), ()),
        _t("TAI", "Tail", ("NAR",), ("KGM",)),
        _t("TEE", "Tooth", ("NAR",), ("KGM",)),
        _t("TIM", "Timber", ("MTQ",), ("KGM",)),
        _t("TRW", "Transformed wood", ("MTQ",), ("KGM",)),
        _t("TRO", "Trophy", ("NAR",), ()),
        _t("TRU", "Trunk", ("NAR",), ()),
        _t("TUS", "Tusk (raw ivory)", ("NAR",), ("KGM",)),
        _t("VEN", "Veneer sheets", ("MTK", "MTQ"), ("KGM",)),
        _t("WAX", "Wax", ("KGM",), ()),
        _t("WPR", "Wood product", ("NAR",), ("KGM",)),
    ]
)

# Terms no longer in the Guidelines: still found on old permits (EPT v1) and in trade records,
# so a reader keeps them and the rules warn. v9 guide Table A2.3, then the 2013 (v8) lists.
HISTORICAL_TERMS: Mapping[str, Term] = _by_code(
    [
        _h("BPR", "Bone products", "v9 A2.3"),
        _h("CSD", "Coral sand", "v9 A2.3 (listed as COS in v8 2013 guide and SAPI 2013 csv)"),
        _h("HEA", "Heads", "v9 A2.3"),
        _h("HPR", "Horn products", "v9 A2.3"),
        _h("HOS", "Horn scraps", "v9 A2.3"),
        _h("FRN", "Items of furniture", "v9 A2.3"),
        _h("IVS", "Ivory scraps", "v9 A2.3"),
        _h("LEA", "Leather", "v9 A2.3"),
        _h("SKO", "Leather items", "v9 A2.3"),
        _h("SHO", "Pairs of shoes", "v9 A2.3"),
        _h("PEA", "Pearls", "v9 A2.3 (replaced by PRL)", "PRL"),
        _h("PKY", "Piano keys", "v9 A2.3 (sets of piano keys; replaced by KEY, 1 set = 52 keys)", "KEY"),
        _h("QUI", "Quills", "v9 A2.3"),
        _h("SCR", "Scraps", "v9 A2.3"),
        _h("SKS", "Skin scraps", "v9 A2.3"),
        _h("FRA", "Spectacle frames", "v9 A2.3"),
        _h("TIC", "Timber carvings", "v9 A2.3"),
        _h("TIP", "Timber pieces", "v9 A2.3"),
        _h("UNS", "Unspecified", "v9 A2.3"),
        _h("VNM", "Venom", "v9 A2.3"),
        _h("WOO", "Wood products", "v9 A2.3 (replaced by WPR)", "WPR"),
        _h("BEL", "Belts", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("BUL", "Bulbs", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("CST", "Chess sets", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("HAN", "Handbags", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("OTH", "Other", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("WAL", "Wallets", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("WAT", "Watchstraps", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("WHO", "Whole", "v8 2013 guide Annex 1 only (not in v9)"),
        _h("SKD", "Sides", "SAPI 2013 term_codes csv only (duplicate of SID)", "SID"),
    ]
)

# --- Units (box 11) ----------------------------------------------------------------------------

# Since May 2021 the Guidelines use UN/ECE Recommendation 20 codes, which fit UN/CEFACT @unitCode.
UNITS: Mapping[str, Unit] = _by_code(
    [
        Unit("GRM", "Grams (g)"),
        Unit("KGM", "Kilograms (kg)"),
        Unit("LTR", "Litres (l)"),
        Unit("MLT", "Millilitres (ml)"),
        Unit("MTR", "Metres (m)"),
        Unit("CMQ", "Cubic centimetres (cm3)"),
        Unit("MTK", "Square metres (m2)"),
        Unit("MTQ", "Cubic metres (m3)"),
        Unit("NAR", "Number of specimens"),
    ]
)


def _old(code: str, description: str, maps_to: str | None = None, conversion: str | None = None) -> Unit:
    return Unit(code, description, historical=True, maps_to=maps_to, conversion=conversion)


# Units retired from the Guidelines (v9 Table A2.4, the 2013 lists) and the four pre-2021 codes
# that were only recoded. ``maps_to``/``conversion`` are UNEP-WCMC TradePlus conversions, given
# for display; nothing in the gateway converts quantities.
HISTORICAL_UNITS: Mapping[str, Unit] = _by_code(
    [
        _old("BAK", "Back skins"),
        _old("BAG", "Bags", "NAR"),
        _old("BSK", "Belly skins"),
        _old("BOT", "Bottles", "NAR"),
        _old("BOX", "Boxes", "NAR"),
        _old("CAN", "Cans", "NAR"),
        _old("CRT", "Cartons", "NAR"),
        _old("CAS", "Cases", "NAR"),
        _old("CTM", "Centimetres", "MTR", "/100"),
        _old("CUF", "Cubic feet", "MTQ", "/35.315"),
        _old("FEE", "Feet", "MTR", "/3.281"),
        _old("FLA", "Flasks", "NAR"),
        _old("HRN", "Hornback skins"),
        _old("INC", "Inches", "MTR", "/39.37"),
        _old("ITE", "Items", "NAR"),
        _old("MYG", "Micrograms", "KGM", "/1e9"),
        _old("MGM", "Milligrams", "KGM", "/1e6"),
        _old("OUN", "Ounces", "KGM", "/35.274"),
        _old("PAI", "Pairs", "NAR", "x2"),
        _old("PCS", "Pieces", "NAR"),
        _old("PND", "Pounds", "KGM", "/2.205"),
        _old("SET", "Sets", "NAR"),
        _old("SHP", "Shipments", "NAR"),
        _old("SID", "Sides"),
        _old("SKI", "Skins", "NAR"),
        _old("SQC", "Square centimetres", "MTK", "/10000"),
        _old("SQD", "Square decimetres", "MTK", "/100"),
        _old("SQF", "Square feet", "MTK", "/10.764"),
        _old("TON", "Metric tons", "KGM", "x1000"),
        _old("YAR", "Yards (yds)", "MTR", "/1.094"),
        _old("KIL", "Kilograms (kg) - pre-2021 code", "KGM", "recoded"),
        _old("CUM", "Cubic metres (m3) - pre-2021 code", "MTQ", "recoded"),
        _old("SQM", "Square metres (m2) - pre-2021 code", "MTK", "recoded"),
        _old("CCM", "Cubic centimetres (cm3) - pre-2021 code", "CMQ", "recoded"),
    ]
)

# Before 2021 a blank unit meant a number of specimens. A reader of an old permit maps a blank
# unit to this code; the canonical permit never carries an empty unit.
BLANK_UNIT_MEANS = "NAR"

# --- Plain code sets, for membership tests on the hot path ------------------------------------

PURPOSE_CODES: frozenset[str] = frozenset(PURPOSES)
SOURCE_CODES: frozenset[str] = frozenset(SOURCES)
APPENDIX_CODES: frozenset[str] = frozenset(APPENDICES)
DOCUMENT_TYPE_CODES: frozenset[str] = frozenset(DOCUMENT_TYPES)
TERM_CODES: frozenset[str] = frozenset(TERMS)
HISTORICAL_TERM_CODES: frozenset[str] = frozenset(HISTORICAL_TERMS)
UNIT_CODES: frozenset[str] = frozenset(UNITS)
HISTORICAL_UNIT_CODES: frozenset[str] = frozenset(HISTORICAL_UNITS)


def term(code: str) -> Term | None:
    """The current or historical term with this code, or None."""
    return TERMS.get(code) or HISTORICAL_TERMS.get(code)


def unit(code: str) -> Unit | None:
    """The current or historical unit with this code, or None."""
    return UNITS.get(code) or HISTORICAL_UNITS.get(code)
