"""The gateway's own signing keys: loading a PEM key, its RFC 7638 `kid`, and the published JWK Set."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with the algorithm it signs with and its public JWK (`kid` = RFC 7638 thumbprint)."""

    algorithm: str  # ES256 for P-256, RS256 for RSA
    kid: str
    private_key: Any  # ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    public_jwk: dict[str, str]

    def __repr__(self) -> str:
        return f"SigningKey(algorithm={self.algorithm!r}, kid={self.kid!r})"


def parse_signing_key(pem: bytes, *, allow_rsa: bool) -> SigningKey:
    """A P-256 key (ES256), or with `allow_rsa` an RSA key of at least 2048 bits (RS256). ValueError otherwise."""
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("not an unencrypted PEM private key") from None
    members: tuple[str, ...]
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if private_key.curve.name != "secp256r1":
            raise ValueError("an EC key must be on P-256 (ES256)")
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        algorithm, members = "ES256", ("crv", "kty", "x", "y")
    elif allow_rsa and isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise ValueError("an RSA key must have at least 2048 bits")
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        algorithm, members = "RS256", ("e", "kty", "n")
    else:
        raise ValueError("expected a P-256 EC private key" + (" or an RSA private key" if allow_rsa else ""))
    # RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace.
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode("ascii")
    public = {**{name: str(jwk[name]) for name in members}, "kid": kid, "use": "sig", "alg": algorithm}
    return SigningKey(algorithm, kid, private_key, public)


class PublishedKeys:
    """The JWK Set at `GET /.well-known/jwks.json`: every key that signs now, and every retired key until
    the last assertion it signed has expired (then a verifier can no longer need it)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._keys: dict[str, tuple[dict[str, str], float | None]] = {}  # kid → (jwk, published until; None: active)

    def publish(self, kid: str, jwk: dict[str, str], until: float | None) -> None:
        """Publish `kid` (`until` None: while it signs) or retire it at `until` (epoch seconds)."""
        self._keys[kid] = (jwk, until)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def document(self) -> dict[str, list[dict[str, str]]]:
        now = self._clock()
        for kid, (_, until) in list(self._keys.items()):
            if until is not None and until < now:
                del self._keys[kid]
        return {"keys": [jwk for jwk, _ in self._keys.values()]}
