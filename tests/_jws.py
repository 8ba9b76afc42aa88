"""Hand-built JWS compact tokens for the token tests: exact header and payload bytes, real or forged signatures.

    compact({"alg": "none"}, claims)                      # any header, any signature bytes (default none)
    jws(private_key, "ES256", {"kid": "k1"}, claims)      # really signed, over exactly this header and payload
    signed_raw(private_key, "ES256", b'{"alg":..}', b"..") # really signed, over hand-made bytes
    hmac_token(public_pem, "HS256", {"kid": "k1"}, claims) # "signed" with a MAC keyed by bytes of one's choosing

Built byte for byte rather than with pyjwt's encoder, so that claims and headers it refuses can be signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import jwt


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: object) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()


def compact(header: Mapping[str, Any], payload: object, signature: bytes = b"") -> str:
    """header.payload.signature with no signing at all (payload: a JSON value or raw bytes)."""
    return f"{b64url(_json(dict(header)))}.{b64url(_json(payload))}.{b64url(signature)}"


def signed_raw(private_key: Any, alg: str, header_json: bytes, payload: object) -> str:
    """A real signature by `private_key` over hand-made header bytes (duplicate members, other odd JSON)."""
    signing_input = f"{b64url(header_json)}.{b64url(_json(payload))}".encode()
    algorithm = jwt.get_algorithm_by_name(alg)
    return f"{signing_input.decode()}.{b64url(algorithm.sign(signing_input, private_key))}"


def jws(private_key: Any, alg: str, header: Mapping[str, Any], payload: object) -> str:
    """A real signature by `private_key` over exactly this header (with `alg` first) and payload."""
    return signed_raw(private_key, alg, _json({"alg": alg, **header}), payload)


def hmac_token(secret: bytes, alg: str, header: Mapping[str, Any], payload: object) -> str:
    """An HMAC "signature" keyed with bytes of the attacker's choosing (e.g. the issuer's public key)."""
    # The digest follows the name case-blind, so that a header spelling it "hs256" is still a real HMAC.
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg.upper()]
    signing_input = f"{b64url(_json({'alg': alg, **header}))}.{b64url(_json(payload))}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), digest).digest())}"
