"""Validation of ``rsm:CITESEPermit`` documents against the project's own XSD (schemas/uncefact/).

``PermitSchema`` (libxml2 through lxml) is the one on the hot path: it is compiled once, from
local files only, and ``validate`` reports every error at once as
``EpixError(SCHEMA_INVALID, sentence, errors=[{"line", "path", "message"}, ...])``.
``XmlschemaPermitSchema`` does the same with the pure-Python ``xmlschema`` package; it is much
slower and exists for the benchmark and for its more explicit messages.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree

from adapters.ns import DS, RAM, RSM
from domain.errors import EpixError, ErrorCode

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "uncefact"
PERMIT_XSD = SCHEMA_DIR / "CITESEPermit_2.xsd"

# The schema files are ours and local; nothing they name may come from the network or a DTD.
_SCHEMA_PARSER_OPTIONS = dict(no_network=True, resolve_entities=False, load_dtd=False, dtd_validation=False, huge_tree=False)


# libxml2 names elements in Clark notation; the prefixes of our documents read better.
_READABLE_NAMES = ((f"{{{RSM}}}", "rsm:"), (f"{{{RAM}}}", "ram:"), (f"{{{DS}}}", "ds:"))


def _readable(message: str) -> str:
    for clark, prefix in _READABLE_NAMES:
        message = message.replace(clark, prefix)
    return message


def _as_root(doc: etree._ElementTree | etree._Element) -> etree._Element:
    if isinstance(doc, etree._ElementTree):
        return doc.getroot()
    if isinstance(doc, etree._Element):
        return doc
    raise TypeError("validate takes an lxml tree or element")


def _raise(errors: list[dict[str, Any]]) -> None:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    where = f" at {first['path']}" if first.get("path") else ""
    raise EpixError(
        ErrorCode.SCHEMA_INVALID,
        f"The document does not match the CITESEPermit schema{where}: {first['message']}{more}",
        errors=errors,
    )


class PermitSchema:
    """The CITESEPermit XSD compiled by libxml2; build it once (see ``permit_schema()``).

    libxml2 keeps the errors of the last validation on the schema object, so one instance
    serves one thread at a time (the event loop); a worker thread should build its own.
    """

    def __init__(self, path: Path = PERMIT_XSD) -> None:
        parser = etree.XMLParser(**_SCHEMA_PARSER_OPTIONS)
        try:
            self._schema = etree.XMLSchema(etree.parse(str(path), parser))
        except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            raise EpixError(ErrorCode.CONFIG_INVALID, f"The CITESEPermit schema {path} cannot be loaded: {exc}.") from None

    def errors(self, doc: etree._ElementTree | etree._Element) -> list[dict[str, Any]]:
        """Every schema error, empty when the document is valid."""
        if self._schema.validate(_as_root(doc)):
            return []
        return [{"line": e.line, "path": e.path, "message": _readable(e.message)} for e in self._schema.error_log]

    def validate(self, doc: etree._ElementTree | etree._Element) -> None:
        """Return if the document is valid, else raise EpixError(SCHEMA_INVALID) listing every error."""
        if self._schema.validate(_as_root(doc)):
            return
        _raise([{"line": e.line, "path": e.path, "message": _readable(e.message)} for e in self._schema.error_log])


@cache
def permit_schema() -> PermitSchema:
    """The process-wide PermitSchema, compiled on first use."""
    return PermitSchema()


class XmlschemaPermitSchema:
    """The same schema through the ``xmlschema`` package (pure Python: slower, wordier errors)."""

    def __init__(self, path: Path = PERMIT_XSD) -> None:
        import xmlschema  # only the benchmark and diagnostics pay for importing it

        try:
            # "sandbox": only files under the schema's own folder may be loaded.
            self._schema = xmlschema.XMLSchema10(str(path), allow="sandbox", defuse="always")
            self._resource = xmlschema.XMLResource
        except (OSError, xmlschema.XMLSchemaException) as exc:
            raise EpixError(ErrorCode.CONFIG_INVALID, f"The CITESEPermit schema {path} cannot be loaded: {exc}.") from None

    def errors(self, doc: etree._ElementTree | etree._Element) -> list[dict[str, Any]]:
        # The document is already parsed: wrap it so that nothing it names is ever loaded.
        resource = self._resource(_as_root(doc), allow="none", defuse="always")
        return [
            {"line": getattr(e, "sourceline", None), "path": e.path, "message": e.reason or str(e)}
            for e in self._schema.iter_errors(resource)
        ]

    def validate(self, doc: etree._ElementTree | etree._Element) -> None:
        errors = self.errors(doc)
        if errors:
            _raise(errors)
