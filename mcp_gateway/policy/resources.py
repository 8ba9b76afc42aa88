"""Resource URI rules: the longest configured prefix wins, and spellings that could name another URI are refused.

`resource_scopes` keys are matched as exact string prefixes, which is only safe if the URI the upstream
acts on is the string we judged. Upstreams resolve `..`, decode `%2e%2e` and `%73`, and treat `FILE:` as
`file:`, so `file:///public/../secret` starts with the `file:///public/` prefix but reads a secret. The
matcher therefore refuses (`AMBIGUOUS`) a URI that

* contains a dot-segment (`.` or `..` between `/`, `\\`, `?`, `#` or `;`), raw or percent-decoded
  (RFC 3986 §5.2.4 removes them; Tomcat-style servers also split on `;`), or a control character; or
* would match a different rule after RFC 3986 §6.2.2 syntax normalization (lower-case scheme and
  authority, percent-decoding) than as sent. Keys are normalized the same way, so a key written with
  `%20` still matches a URI written with `%20`.

What remains: spellings only the upstream considers equal (`file:////secret`, symlinks, case-insensitive
file systems). Prefix rules that grant access (default omitted, prefixes open things up) fail closed on
those; prefix rules that lock a subtree down below a more permissive `default_scopes` cannot promise that,
and the allowlist should prefer the first style.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Final, Generic, Literal, TypeVar
from urllib.parse import unquote

__all__ = ["AMBIGUOUS", "Ambiguous", "ResourceRules", "normalize_uri", "template_literal_prefix"]

_T = TypeVar("_T")


class Ambiguous(enum.Enum):
    """The marker for a URI that cannot be judged by its spelling."""

    AMBIGUOUS = "ambiguous"


AMBIGUOUS: Final = Ambiguous.AMBIGUOUS

_SEGMENT_SEPARATORS = re.compile(r"[/\\?#;]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?://[^/?#]*)?")
_MAX_DECODES = 4  # a URI still changing after four rounds of percent-decoding is not one we can judge


def normalize_uri(uri: str) -> str | None:
    """The URI as an upstream might understand it, or None if it contains dot-segments or control characters."""
    decoded = uri
    for _ in range(_MAX_DECODES):
        if "%" not in decoded:
            break
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        if "%" in decoded and unquote(decoded) != decoded:
            return None
    if _CONTROL.search(decoded):
        return None
    if any(segment in (".", "..") for segment in _SEGMENT_SEPARATORS.split(decoded)):
        return None
    head = _SCHEME_AUTHORITY.match(decoded)
    if head is not None:
        decoded = head.group(0).lower() + decoded[head.end() :]
    return decoded


def template_literal_prefix(uri_template: str) -> str:
    """The literal text of an RFC 6570 URI template before its first expression (`file:///{path}` → `file:///`)."""
    brace = uri_template.find("{")
    return uri_template if brace < 0 else uri_template[:brace]


class _PrefixTable(Generic[_T]):
    """Longest exact string prefix lookup: one dict probe per distinct key length, longest first."""

    __slots__ = ("_entries", "_lengths")

    def __init__(self, entries: Mapping[str, _T]) -> None:
        self._entries = dict(entries)
        self._lengths = tuple(sorted({len(key) for key in entries}, reverse=True))

    def longest(self, text: str) -> _T | None:
        size = len(text)
        entries = self._entries
        for length in self._lengths:
            if length <= size:
                found = entries.get(text[:length])
                if found is not None:
                    return found
        return None


class _Conflict(enum.Enum):
    CONFLICT = "conflict"  # two keys that normalize alike but carry different rules


class ResourceRules(Generic[_T]):
    """`resource_scopes`, compiled: `match(uri)` → the rule of the longest matching prefix, None, or AMBIGUOUS."""

    __slots__ = ("_normalized", "_raw")

    def __init__(self, rules: Mapping[str, _T]) -> None:
        self._raw: _PrefixTable[_T] = _PrefixTable(rules)
        normalized: dict[str, _T | _Conflict] = {}
        # Keys that do not normalize (they contain dot-segments) can still match as sent; the URI's own
        # normalization then fails and the request is refused, which is the point.
        by_length = sorted(rules.items(), key=lambda item: len(item[0]))
        for key, rule in by_length:
            norm = normalize_uri(key)
            if norm is None:
                continue
            if norm in normalized and normalized[norm] is not rule:
                normalized[norm] = _Conflict.CONFLICT
            else:
                normalized[norm] = rule
        self._normalized: _PrefixTable[_T | _Conflict] = _PrefixTable(normalized)

    def match(self, uri: str) -> _T | Literal[Ambiguous.AMBIGUOUS] | None:
        raw = self._raw.longest(uri)
        norm = normalize_uri(uri)
        if norm is None:
            return AMBIGUOUS
        if self._normalized.longest(norm) is not raw:
            return AMBIGUOUS
        return raw
