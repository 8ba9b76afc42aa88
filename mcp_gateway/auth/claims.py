"""Judging a token's claims against this resource: pure, no clock reads, no I/O.

Decoding a token (and checking its signature) is the verifier's business; this module only decides
whether an already-authenticated claims set may be used here, the authlib split between
`JWT.decode` and `JWTClaims.validate`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping

from mcp_gateway.auth.principal import Principal
from mcp_gateway.errors import InvalidToken

# RFC 8693 §4.1 nests one `act` per prior actor; real chains are one or two deep.
MAX_ACTOR_DEPTH = 8
# The longest identity value (sub, client_id, azp, each act's sub, jti) accepted, in characters. Real ones
# are UUIDs, e-mail addresses, URLs or DNs, well under this; longer ones only bloat every record they name.
MAX_IDENTITY_CHARS = 256

# Characters no identity value needs and that make a record, a log line or a terminal lie about it:
# C0 controls (CR/LF forge lines, ESC drives terminals), DEL, C1 controls (CSI), the Unicode line and
# paragraph separators, the Bidi_Control characters (U+061C, U+200E/F, U+202A-E, U+2066-9: Trojan Source,
# CVE-2021-42574) and lone surrogates, which no UTF-8 encoder writes.
_UNPRINTABLE: dict[str, re.Pattern[str]] = {
    "a control character": re.compile("[\x00-\x1f\x7f-\x9f]"),
    "a line or paragraph separator": re.compile("[\u2028\u2029]"),
    "a bidirectional formatting character": re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"),
    "an unpaired surrogate": re.compile("[\ud800-\udfff]"),
}


def principal_from_claims(
    claims: Mapping[str, object],
    *,
    token: str,
    issuer: str,
    resource: str,
    now: float,
    leeway: int,
    max_lifetime: int,
    accept_scp: bool,
    require_issuer: bool = True,
) -> Principal:
    """Check `claims` for use at `resource` at time `now`; the principal they describe, or InvalidToken.

    `require_issuer=False` is for RFC 7662 introspection responses, where `iss` is optional (§2.2)
    and the endpoint itself vouches for the issuer; when present it must still match exactly.
    """
    # RFC 7519 §4.1.1 / RFC 9068 §4: iss compared as an exact string. No prefix, suffix, containment
    # or URL normalisation: CVE-2024-53861 was a partial match of exactly this.
    iss = _optional_str(claims, "iss")
    if iss is None:
        if require_issuer:
            raise InvalidToken("the token has no issuer")
    elif iss != issuer:
        raise InvalidToken("the token was not issued by the expected issuer")

    # RFC 7519 §4.1.3 + RFC 8707 §2 + MCP authorization: aud must name this resource exactly.
    # A token for another route, for the bare origin or for another service is someone else's.
    audience = _audience(claims.get("aud"))
    if resource not in audience:
        raise InvalidToken("the token is not intended for this resource")

    # RFC 7519 §4.1.4 (exp, required here as RFC 9068 §2.2 requires it), §4.1.5 (nbf), §4.1.6 (iat);
    # RFC 7519 §4.1.4 allows "some small leeway ... to account for clock skew".
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise InvalidToken("the token has no expiry")
    if now >= exp + leeway:
        raise InvalidToken("the token has expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise InvalidToken("the token is not valid yet")
    iat = _numeric_date(claims, "iat")
    if iat is not None:
        if iat > now + leeway:
            raise InvalidToken("the token was issued in the future")
        lifetime = exp - iat
    else:
        # Without iat the remaining lifetime is all we can judge; the issuer's clock may be behind.
        lifetime = exp - now - leeway
    # RFC 8725 §3.10 / RFC 9700 §4.10: short-lived tokens only; a long-lived one is refused outright.
    if lifetime > max_lifetime:
        raise InvalidToken("the token's lifetime is longer than this resource accepts")

    # RFC 7800 `cnf`: the token is bound to a key its holder must prove (DPoP, RFC 9449 §7.1; mTLS,
    # RFC 8705 §3). We check no such proof, so accepting it as a plain bearer token would undo the
    # binding that makes a stolen copy useless; it is refused instead.
    if "cnf" in claims:
        raise InvalidToken("sender-constrained tokens are not supported here")

    subject = _identity(claims, "sub")
    client_id = _identity(claims, "client_id")
    azp = _identity(claims, "azp")
    # RFC 9068 §2.2 client_id; OpenID Connect azp; else the subject is the client (client_credentials).
    agent_id = client_id or azp or subject
    if not agent_id:
        raise InvalidToken("the token names no client")
    actors = _actors(claims.get("act"))
    # RFC 8693 §4.1: with an act chain, sub is the principal on whose behalf the actors act;
    # without one, sub is a delegating user only when it is not the client itself.
    delegating_user = subject if actors or subject != agent_id else None

    jti = _identity(claims, "jti")
    token_id = jti if jti else "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()

    return Principal(
        issuer=iss if iss is not None else issuer,
        subject=subject,
        agent_id=agent_id,
        delegating_user=delegating_user,
        actors=actors,
        scopes=_scopes(claims, accept_scp=accept_scp),
        expires_at=exp,
        token_id=token_id,
        audience=audience,
    )


def _optional_str(claims: Mapping[str, object], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidToken(f"the token's {name} claim has the wrong type")
    return value


def identity_defect(value: str) -> str | None:
    """Why `value` cannot stand for an identity in audit records, or None when it can.

    SECURITY.md "identity claims with control characters are refused": these values are written into
    audit records, exports and terminal output as the token gave them, so a token could otherwise forge
    lines, drive a terminal or reorder what a reader sees. Refusing the token is cleaner than escaping a
    value that is then no longer the identity the issuer asserted.
    """
    if len(value) > MAX_IDENTITY_CHARS:
        return f"is longer than {MAX_IDENTITY_CHARS} characters"
    for what, pattern in _UNPRINTABLE.items():
        if pattern.search(value):
            return f"contains {what}"
    return None


def _identity(claims: Mapping[str, object], name: str) -> str | None:
    value = _optional_str(claims, name)
    if value is not None:
        _check_identity(name, value)
    return value


def _check_identity(name: str, value: str) -> None:
    defect = identity_defect(value)
    if defect is not None:
        # Names the claim, never its value (SECURITY.md: messages never echo what the client sent).
        raise InvalidToken(f"the token's {name} claim {defect}")


def _numeric_date(claims: Mapping[str, object], name: str) -> float | None:
    """RFC 7519 §2 NumericDate: a JSON number. bool is an int in Python but not a number in JSON."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"the token's {name} claim has the wrong type")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidToken(f"the token's {name} claim is out of range") from None
    if not math.isfinite(number):
        raise InvalidToken(f"the token's {name} claim is out of range")
    return number


def _audience(value: object) -> tuple[str, ...]:
    # RFC 7519 §4.1.3: "either an array of case-sensitive strings ... or a single string".
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    if value is None:
        raise InvalidToken("the token has no audience")
    raise InvalidToken("the token's aud claim has the wrong type")


def _scopes(claims: Mapping[str, object], *, accept_scp: bool) -> frozenset[str]:
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise InvalidToken("the token's scope claim has the wrong type")
        # RFC 6749 §3.3 / RFC 9068 §2.2.3: a space-delimited list of exact, case-sensitive tokens.
        # Only U+0020 delimits (not tabs or other whitespace); empty tokens from doubled spaces are dropped.
        return frozenset(part for part in scope.split(" ") if part)
    if accept_scp:
        scp = claims.get("scp")
        if scp is None:
            return frozenset()
        if not isinstance(scp, list) or not all(isinstance(item, str) for item in scp):
            raise InvalidToken("the token's scp claim has the wrong type")
        return frozenset(item for item in scp if item)
    return frozenset()


def _actors(value: object) -> tuple[str, ...]:
    """RFC 8693 §4.1: the outermost `act` is the current actor, nested ones are prior actors."""
    actors: list[str] = []
    while value is not None:
        if len(actors) >= MAX_ACTOR_DEPTH:
            raise InvalidToken(f"the token's act claim nests more than {MAX_ACTOR_DEPTH} actors")
        if not isinstance(value, dict):
            raise InvalidToken("the token's act claim is malformed")
        sub = value.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("the token's act claim is malformed")
        _check_identity("act." * len(actors) + "act.sub", sub)
        actors.append(sub)
        value = value.get("act")
    return tuple(actors)
