"""Refusing allowlist entries whose names or hosts a human (or an agent) could mistake for each other."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from urllib.parse import urlsplit

# A small skeleton table in the spirit of Unicode TR39 \u00a74 (confusable detection): the homoglyphs
# that matter for ASCII-looking names, folded to one representative.
_HOMOGLYPHS = str.maketrans(
    {
        "0": "o",
        "1": "l",
        "i": "l",
        "|": "l",
        "5": "s",
        "$": "s",
        "3": "e",
        "@": "a",
        "4": "a",
        "8": "b",
        "\u0430": "a",
        "\u0435": "e",
        "\u043e": "o",
        "\u0440": "p",
        "\u0441": "c",
        "\u0443": "y",
        "\u0445": "x",
        "\u0456": "l",
        "\u0458": "j",
        "\u0455": "s",
        "\u0501": "d",
        "\u0261": "g",
        "\u0578": "n",
        "\u03bd": "v",
        "\u03bf": "o",
        "\u03c1": "p",
        "\u03c4": "t",
        "\u03c5": "u",
        "\u03ba": "k",
        "\u03b9": "l",
        "-": "",
        "_": "",
        ".": "",
    }
)


def skeleton(text: str) -> str:
    """NFKC, case-folded, homoglyphs folded, separators dropped: `my-Server` and `myserver` agree."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return folded.translate(_HOMOGLYPHS).replace("rn", "m").replace("vv", "w")


def _distance_at_most_one(a: str, b: str) -> bool:
    # Damerau-Levenshtein distance \u2264 1 (one insertion, deletion, substitution or adjacent swap).
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def confusable(a: str, b: str) -> bool:
    """Whether two distinct identifiers look alike (same skeleton, or one edit apart when long enough)."""
    if a == b:
        return False
    sa, sb = skeleton(a), skeleton(b)
    return sa == sb or (min(len(sa), len(sb)) >= 4 and _distance_at_most_one(sa, sb))


def confusable_pairs(
    urls: Mapping[str, str], acknowledged: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, str, str]]:
    """Pairs of entries (name, other, why) that look alike, unless either acknowledges the other.

    Entries on the same host (other ports or paths) are one operator's servers, not a typosquat.
    """
    found: list[tuple[str, str, str]] = []
    names = sorted(urls)
    for i, name in enumerate(names):
        for other in names[i + 1 :]:
            if other in acknowledged.get(name, ()) or name in acknowledged.get(other, ()):
                continue
            host_a = (urlsplit(urls[name]).hostname or "").lower()
            host_b = (urlsplit(urls[other]).hostname or "").lower()
            if confusable(name, other):
                found.append((name, other, "names look alike"))
            elif host_a != host_b and not (_is_ip(host_a) or _is_ip(host_b)) and confusable(host_a, host_b):
                found.append((name, other, f"hosts {host_a!r} and {host_b!r} look alike"))
    return found


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
