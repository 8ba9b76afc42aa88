"""Audit exports and terminal output are safe to open (SECURITY.md): visible escapes, neutral CSV cells."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata

import pytest

from mcp_gateway.audit.safe_text import csv_cell, csv_record, json_line, starts_a_formula, visible

_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def read_back(text: str) -> str:
    """The inverse of `visible`, written independently of it."""

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        return {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}.get(body) or chr(int(body[1:], 16))

    return _ESCAPE.sub(one, text)


def is_inert(text: str) -> bool:
    """Only printable characters and spaces: nothing a terminal or viewer acts on."""
    return all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in text)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # ESC: an ANSI sequence that would clear the screen
        ("\x07", "\\x07"),  # BEL
        ("\x00", "\\x00"),  # NUL
        ("\x7f", "\\x7f"),  # DEL
        ("\x85", "\\x85"),  # C1 NEL, a line break to some viewers
        ("\x9b31m", "\\x9b31m"),  # C1 CSI: an ANSI sequence in one character
        ("\u2028", "\\u2028"),  # LINE SEPARATOR
        ("\u2029", "\\u2029"),  # PARAGRAPH SEPARATOR
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),  # bidi embeddings, overrides
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # bidi isolates (Trojan Source)
        ("\u200b\ufeff", "\\u200b\\ufeff"),  # zero-width space, BOM
        ("\ud800", "\\ud800"),  # a lone surrogate: printing it raw would raise
        ("\U000e0041", "\\U000e0041"),  # a TAG character: invisible
        ("\t\r\n", "\\t\\r\\n"),
        ("C:\\x1b", "C:\\\\x1b"),  # a literal backslash is doubled, so an escape cannot be forged
    ],
)
def test_visible_escapes_every_control_format_and_separator_character(raw: str, shown: str) -> None:
    assert visible(raw) == shown


@pytest.mark.parametrize(
    "text", ["alice@example.com", "café 東京 \uff1d\uff11 🙂 ok", "a b", "", "tools:call tools:read"]
)
def test_visible_leaves_printable_text_of_any_script_alone(text: str) -> None:
    assert visible(text) == text


def test_visible_text_is_inert_and_reads_back_to_every_code_point() -> None:
    everything = "".join(map(chr, range(0x110000)))
    shown = visible(everything)
    assert is_inert(shown)
    assert read_back(shown) == everything
    unsafe = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    assert not any(unicodedata.category(ch) in unsafe for ch in shown)


@pytest.mark.parametrize(
    "text",
    [
        "=1+1",
        "+1",
        "-2+3",
        "@SUM(1)",
        "\t=1",
        "\r=1",
        "\n=1",
        "\x00=1",
        "\uff1d1+1",  # FULLWIDTH EQUALS SIGN
        "\uff0b1",  # FULLWIDTH PLUS SIGN
        "\uff0d1",  # FULLWIDTH HYPHEN-MINUS
        "\uff20SUM(1)",  # FULLWIDTH COMMERCIAL AT
        "\ufe661",  # SMALL EQUALS SIGN
        "\ufe621",  # SMALL PLUS SIGN
        "\ufe631",  # SMALL HYPHEN-MINUS
        "\ufe6bx",  # SMALL COMMERCIAL AT
        "\u22121",  # MINUS SIGN
        "  =1+1",  # spaces some spreadsheets trim
        "\u3000=1",  # an ideographic space
        "\u200b=1",  # an invisible character before the formula
    ],
)
def test_a_cell_a_spreadsheet_would_evaluate_is_recognised(text: str) -> None:
    assert starts_a_formula(text)


@pytest.mark.parametrize("text", ["", "   ", "a=1", "1+1", "'=1", "x-1", "日本=1", "sess-1"])
def test_a_cell_that_cannot_start_a_formula_is_left_alone(text: str) -> None:
    assert not starts_a_formula(text)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        ("", ""),
        (1800, "1800"),
        (250.0, "250.0"),
        ("sess-1", '"sess-1"'),
        ('=HYPERLINK("http://evil")', '"\'=HYPERLINK(""http://evil"")"'),
        ("-2+3", '"\'-2+3"'),
        ("\tbob", '"\'\\tbob"'),
        ("\uff1d1+1", '"\'\uff1d1+1"'),
        ("ok\r=cmd|' /C calc'!A0", "\"ok\\r=cmd|' /C calc'!A0\""),
        ("a,b;c", '"a,b;c"'),
        ('say "hi"', '"say ""hi"""'),
        (["tools:call", "tools:read"], '"tools:call tools:read"'),
        (("=cmd|' /C calc'!A0",), "\"'=cmd|' /C calc'!A0\""),
        ({"k": "=1"}, '"{""k"":""=1""}"'),
    ],
)
def test_a_csv_cell_is_quoted_escaped_and_neutralised(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


def test_a_csv_record_stays_one_record_with_its_own_cells_in_any_reader() -> None:
    hostile = ["a\rb", "c\nd", "e\r\nf", 'g"h', "i,j", "=1+1", "\x00", "k\u2028l", None, 7]
    record = csv_record(hostile)
    assert record.endswith("\r\n") and record.count("\r") == 1 and record.count("\n") == 1
    assert not any(ch in record for ch in "\x00\u2028")
    (parsed,) = list(csv.reader(io.StringIO(record, newline="")))
    assert len(parsed) == len(hostile)
    assert [read_back(cell) for cell in parsed[:6]] == ["a\rb", "c\nd", "e\r\nf", 'g"h', "i,j", "'=1+1"]


def test_a_json_line_is_printable_ascii_and_decodes_to_the_same_value() -> None:
    value = {"tool": "echo\x1b]0;x\x07\u202e", "ctx": "a\x85b\u2028c\x7f\x00\ud800", "n": 1.5, "l": ["=1"]}
    line = json_line(value)
    assert line.isascii() and is_inert(line)
    assert json.loads(line) == value


def test_a_json_line_refuses_a_value_that_is_not_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        json_line({"latency_ms": float("nan")})
