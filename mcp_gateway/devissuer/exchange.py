"""The development issuer's RFC 8693 token exchange: a client's token swapped for one naming its actor. DEV ONLY."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt

from mcp_gateway.devissuer.config import IssuerConfig
from mcp_gateway.devissuer.tokens import IssuedToken, TokenRequestError

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_SUBJECT_TYPES = frozenset({ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"})


def exchange_token(config: IssuerConfig, actor: str, form: Mapping[str, str], *, now: float) -> IssuedToken:
    """Exchange `form["subject_token"]` (a token this issuer minted) for one good for the requested audience.

    The new token keeps the subject token's user as `sub` and names the agent the user delegated to in `act`
    (RFC 8693 §4.1), nesting any earlier `act`; `client_id` is the authenticated client that asked (`actor`,
    the gateway). The actor's `may_exchange` rule says whose tokens it may exchange, and for which audiences.
    """
    token, token_type = form.get("subject_token"), form.get("subject_token_type")
    if not token or token_type not in _SUBJECT_TYPES:
        raise TokenRequestError("invalid_request", "subject_token and an access_token subject_token_type are required")
    requested = form.get("requested_token_type")
    if requested and requested != ACCESS_TOKEN_TYPE:
        raise TokenRequestError("invalid_request", "only access tokens are issued")
    subject = _verified_subject(config, token, now)
    agent = str(subject.get("client_id") or subject.get("sub"))
    target = _target(form)
    rule = config.settings.clients[actor].may_exchange
    allowed = (*rule.get(agent, ()), *rule.get("*", ()))
    if target not in allowed:
        # RFC 8693 §2.2.2: invalid_target when the server is unwilling to issue a token for that target.
        raise TokenRequestError("invalid_target", "this client may not exchange that agent's tokens for that audience")
    held = str(subject.get("scope") or "").split()
    wanted = [scope for scope in (form.get("scope") or "").split(" ") if scope]
    if not set(wanted) <= set(held):
        raise TokenRequestError("invalid_scope", "the requested scope exceeds the subject token's")
    issued_at = int(now)
    expires = min(issued_at + config.settings.token_lifetime_seconds, int(subject["exp"]))
    act: dict[str, Any] = {"sub": agent}
    if isinstance(subject.get("act"), dict):
        act["act"] = subject["act"]
    claims = {
        "iss": config.issuer,
        "sub": subject["sub"],
        "aud": target,
        "exp": expires,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": secrets.token_urlsafe(16),
        "client_id": actor,
        "scope": " ".join(dict.fromkeys(wanted)),
        "act": act,
    }
    key = config.key
    access = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "at+jwt"})
    return IssuedToken(access_token=access, scope=str(claims["scope"]), expires_in=max(1, expires - issued_at))


def _verified_subject(config: IssuerConfig, token: str, now: float) -> dict[str, Any]:
    key = config.key
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=[key.algorithm],
            issuer=config.issuer,
            options={"verify_aud": False, "verify_exp": False, "require": ["exp", "sub"]},
        )
    except jwt.PyJWTError:
        raise TokenRequestError("invalid_request", "the subject_token is not a valid token of this issuer") from None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise TokenRequestError("invalid_request", "the subject_token has expired")
    return claims


def _target(form: Mapping[str, str]) -> str:
    audience, resource = form.get("audience"), form.get("resource")
    if audience and resource and audience != resource:
        raise TokenRequestError("invalid_target", "audience and resource must name the same single target")
    target = audience or resource
    if not target:
        raise TokenRequestError("invalid_target", "audience or resource is required")
    parts = urlsplit(target)
    if not parts.scheme or not parts.netloc or "#" in target:
        raise TokenRequestError("invalid_target", "the target must be an absolute URI without a fragment")
    return target
