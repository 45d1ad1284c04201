"""The one hardened XML parser. Every byte of XML that enters the gateway goes through here.

No DTD, no entities, no network, no processing instructions, UTF-8 only, bounded size and depth.
Each refusal is an ``EpixError`` with its own code, and is decided before or during parsing so
that a hostile document costs little.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from domain.errors import EpixError, ErrorCode


@dataclass(frozen=True, slots=True)
class XmlLimits:
    max_bytes: int = 2 * 1024 * 1024
    max_depth: int = 48


DEFAULT_LIMITS = XmlLimits()

# An XML declaration naming an encoding other than UTF-8 (or its ASCII subset). Matched on the
# whole declaration, however long: whitespace inside it is unbounded, so a fixed-size head could
# miss an encoding pushed past its end.
_DECL_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_UTF8_NAMES = {b"utf-8", b"utf8", b"us-ascii", b"ascii"}
_FORBIDDEN_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST")

_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    collect_ids=False,
)


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(**_PARSER_OPTIONS)


_PARSER = _new_parser()


def _depth_probe(max_depth: int) -> etree.XPath:
    # One compiled XPath that finds any element deeper than the limit; evaluated in C.
    return etree.XPath("/*" + "/*" * max_depth)


_DEPTH_PROBES: dict[int, etree.XPath] = {}
_PROCESSING_INSTRUCTIONS = etree.XPath("//processing-instruction()")
_XML_DECLARATION = re.compile(rb"<\?xml[ \t\r\n]")


def _may_hold_processing_instruction(data: bytes) -> bool:
    """False only when the bytes cannot hold a PI: no "<?" past the XML declaration.

    A PI needs "<?", which text and attribute values cannot contain unescaped; comments and
    CDATA sections can, so a "<?" found here is settled by asking the parsed tree. "?" alone is
    found with memchr and is rare in a permit after its declaration: most documents stop there.
    """
    start = data.find(b"?>") + 2 if _XML_DECLARATION.match(data) else 0
    return data.find(b"?", start) != -1 and data.find(b"<?", start) != -1


def parse_xml(data: bytes, *, limits: XmlLimits = DEFAULT_LIMITS, what: str = "document") -> etree._ElementTree:
    """Parse untrusted bytes into an lxml tree, or raise a specific ``EpixError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_xml takes bytes")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise EpixError(
            ErrorCode.XML_TOO_LARGE,
            f"The {what} is {len(data)} bytes; at most {limits.max_bytes} are accepted.",
            size=len(data),
            limit=limits.max_bytes,
        )
    if not data.strip():
        raise EpixError(ErrorCode.XML_MALFORMED, f"The {what} is empty.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4]:
        raise EpixError(ErrorCode.XML_ENCODING, f"The {what} is UTF-16 or UTF-32; only UTF-8 is accepted.")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    m = _DECL_ENCODING.match(data, len(data) - len(data.lstrip()))
    if m and m.group(1).lower() not in _UTF8_NAMES:
        raise EpixError(
            ErrorCode.XML_ENCODING,
            f"The {what} declares encoding {m.group(1).decode('ascii', 'replace')!r}; only UTF-8 is accepted.",
        )
    # Every DTD construct starts with "<!"; "!" alone is found with memchr and is rare in
    # permits, so most documents skip the slower two-byte search and the case folding.
    if b"!" in data and b"<!" in data:
        upper = data.upper()
        for marker in _FORBIDDEN_MARKERS:
            if marker in upper:
                raise EpixError(
                    ErrorCode.XML_FORBIDDEN_CONSTRUCT,
                    f"The {what} contains a document type declaration ({marker.decode()}); DTDs and entities are refused.",
                )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EpixError(
            ErrorCode.XML_ENCODING,
            f"The {what} is not valid UTF-8 (bad byte at offset {exc.start}).",
            offset=exc.start,
        ) from None
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        line = getattr(exc, "lineno", None)
        if "Excessive depth" in (exc.msg or ""):
            # libxml2's own nesting limit (256) fires before our probe can run.
            raise EpixError(
                ErrorCode.XML_TOO_DEEP,
                f"The {what} nests elements more than {limits.max_depth} levels deep.",
                limit=limits.max_depth,
            ) from None
        raise EpixError(
            ErrorCode.XML_MALFORMED,
            f"The {what} is not well-formed XML: {exc.msg}" + (f" (line {line})." if line else "."),
            line=line,
        ) from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise EpixError(ErrorCode.XML_FORBIDDEN_CONSTRUCT, f"The {what} has a document type declaration.")
    if _may_hold_processing_instruction(data):
        for node in _PROCESSING_INSTRUCTIONS(tree):
            raise EpixError(
                ErrorCode.XML_FORBIDDEN_CONSTRUCT,
                f"The {what} contains a processing instruction <?{node.target}?>, which is refused.",
            )
    probe = _DEPTH_PROBES.get(limits.max_depth)
    if probe is None:
        probe = _DEPTH_PROBES[limits.max_depth] = _depth_probe(limits.max_depth)
    if probe(tree):
        raise EpixError(
            ErrorCode.XML_TOO_DEEP,
            f"The {what} nests elements more than {limits.max_depth} levels deep.",
            limit=limits.max_depth,
        )
    return tree
