"""Record fields made safe to open: visible escapes for terminals, neutral RFC 4180 cells, ASCII JSON.

Every text field of an audit record can be chosen by a client (request context, tool name, session id,
token claims) or by an upstream (error texts). Nothing a client chose may move an auditor's cursor,
reorder what a terminal shows, end a CSV record or run as a spreadsheet formula.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from typing import Any, Final

# Cc: C0 controls, DEL, C1 controls (ESC, BEL, NUL, CSI 0x9b, NEL 0x85, ...). Cf: format characters, among
# them the bidi embeddings and overrides U+202A-202E and isolates U+2066-2069 ("Trojan Source",
# CVE-2021-42574), zero-width characters and the BOM. Zl/Zp: U+2028/U+2029, line breaks to many viewers.
# Cs: lone surrogates (not encodable: printing one raises). Co/Cn: private use and unassigned: invisible.
_UNSAFE_CATEGORIES: Final = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
# The backslash is escaped too, so that every escape is unambiguous and the text is recoverable.
_SHORT_ESCAPES: Final = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}

# A cell starting with one of these is read as a formula (OWASP "CSV Injection"; ASVS 5.0 V1.2.10:
# '=', '+', '-', '@', TAB, NUL; OWASP adds CR and LF). Spreadsheets in CJK locales fold the full-width
# forms (U+FF1D, U+FF0B, U+FF0D, U+FF20) and the small forms (U+FE66, U+FE62, U+FE63, U+FE6B) and the
# MINUS SIGN U+2212 to their ASCII counterparts, so these lead a formula too.
_FORMULA_LEADS: Final = frozenset("=+-@\t\r\n\0" + "\uff1d\uff0b\uff0d\uff20" + "\ufe66\ufe62\ufe63\ufe6b" + "\u2212")
CSV_LINE_END: Final = "\r\n"  # RFC 4180 §2.1


def _escape(ch: str) -> str:
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    if unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """`text` with every control, format and line-separator character written as a visible escape
    (`\\x1b`, `\\u202e`, `\\t`) and every backslash doubled, so the escapes cannot be forged: the result
    holds only printable characters and spaces, and reads back to `text` unambiguously."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to escape (isprintable is False for every unsafe category)
    return "".join(_escape(ch) for ch in text)


def starts_a_formula(text: str) -> bool:
    """True if a spreadsheet could read `text` as a formula: its first character, or the first one after
    leading spaces and invisible characters (which some spreadsheets skip), leads a formula."""
    for ch in text:
        if ch in _FORMULA_LEADS:
            return True
        if not (ch.isspace() or unicodedata.category(ch) in _UNSAFE_CATEGORIES):
            return False
    return False


def _cell_text(value: Any) -> str | None:
    """The text of a non-numeric cell, or None for a number (written as is) or an absent value."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value)  # scope lists: tokens never contain spaces (RFC 6749 §3.3)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return None


def csv_cell(value: Any) -> str:
    """One RFC 4180 field. Text is always quoted (§2.5-2.7: quotes doubled), control characters are
    escaped visibly (a raw CR would end the record in some readers), and a cell a spreadsheet would
    evaluate gets a leading single quote inside the quotes (OWASP CSV injection, ASVS 5.0 V1.2.10)."""
    if value is None:
        return ""
    text = _cell_text(value)
    if text is None:
        return str(value)  # int or float from the gateway itself: a number, never a formula
    if text == "":
        return ""
    escaped = visible(text)
    if starts_a_formula(text):
        escaped = "'" + escaped
    return '"' + escaped.replace('"', '""') + '"'


def csv_record(values: Iterable[Any]) -> str:
    """One CSV record, CRLF-terminated (RFC 4180 §2.1)."""
    return ",".join(csv_cell(value) for value in values) + CSV_LINE_END


def json_line(value: Any) -> str:
    """`value` as one line of JSON, without its newline. ASCII only: every control character, DEL and
    every non-ASCII character (C1, bidi, U+2028) becomes a `\\uXXXX` escape, so the line is safe on a
    terminal and decodes to exactly the same value. Non-finite numbers are refused (not JSON)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False)
