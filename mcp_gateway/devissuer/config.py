"""The development issuer's own TOML: its URL, its signing key, and the clients it will mint tokens for."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mcp_gateway.config import Scope
from mcp_gateway.errors import ConfigError

logger = logging.getLogger(__name__)

_FROZEN = ConfigDict(frozen=True, extra="forbid")
SigningAlgorithm = Literal["ES256", "RS256"]
SigningPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class IssuerClient(BaseModel):
    """`[clients.ID]`: one client allowed to use the client_credentials grant."""

    model_config = _FROZEN

    secret: str | None = Field(default=None, min_length=16)
    secret_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # lowercase hex of SHA-256(secret)
    scopes: tuple[Scope, ...] = ()
    default_scopes: tuple[Scope, ...] | None = None  # granted when `scope` is omitted; default: all of `scopes`
    sub: str | None = Field(default=None, min_length=1)  # the user this client acts for; default: the client id
    resources: tuple[str, ...] = ()  # resource indicators (RFC 8707) it may ask for; empty → any
    # RFC 8693 token exchange, a may_act-style rule: agent client id (or "*") → audiences this client may
    # exchange that agent's tokens for. Empty: this client may exchange nothing.
    may_exchange: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_secret(self) -> IssuerClient:
        if (self.secret is None) == (self.secret_sha256 is None):
            raise ValueError("give exactly one of secret or secret_sha256")
        if self.default_scopes is not None and not set(self.default_scopes) <= set(self.scopes):
            raise ValueError("default_scopes must be a subset of scopes")
        return self

    def secret_matches(self, presented: str) -> bool:
        """Constant-time comparison of digests, so neither length nor content leaks through timing."""
        expected = self.secret_sha256 or hashlib.sha256((self.secret or "").encode()).hexdigest()
        return hmac.compare_digest(hashlib.sha256(presented.encode()).hexdigest(), expected)

    def granted_by_default(self) -> tuple[str, ...]:
        return self.default_scopes if self.default_scopes is not None else self.scopes


class IssuerSettings(BaseModel):
    """The issuer TOML file as written."""

    model_config = _FROZEN

    issuer: str
    signing_key: str = "issuer-key.pem"  # PEM (PKCS#8); relative to the TOML file; generated if missing
    algorithm: SigningAlgorithm = "ES256"
    token_lifetime_seconds: int = Field(default=300, gt=0, le=86400)
    clients: Mapping[str, IssuerClient] = Field(default_factory=dict)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        # RFC 8414 §2: an https URL with no query or fragment (http is tolerated: this is a dev issuer).
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"expected an http(s) URL without query or fragment, got {value!r}")
        return value


@dataclass(frozen=True)
class SigningKey:
    """The issuer's private key with its public JWK; `kid` is the RFC 7638 thumbprint."""

    algorithm: SigningAlgorithm
    kid: str
    private_key: SigningPrivateKey
    public_jwk: Mapping[str, str]


@dataclass(frozen=True)
class IssuerConfig:
    """Everything the dev issuer needs, loaded once."""

    settings: IssuerSettings
    key: SigningKey

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def endpoint(self, path: str) -> str:
        """An absolute URL under the issuer, e.g. `endpoint("/token")`."""
        return self.settings.issuer.rstrip("/") + path


def load_issuer_config(path: str | os.PathLike[str]) -> IssuerConfig:
    """Read the issuer TOML and its signing key (generating and saving one if the file is missing)."""
    config_path = Path(path)
    try:
        data = tomllib.loads(config_path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(str(config_path), "(file)", f"cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(config_path), "(syntax)", f"not valid TOML: {exc}") from exc
    try:
        settings = IssuerSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(str(config_path), key, str(first["msg"])) from exc
    key_path = Path(settings.signing_key)
    if not key_path.is_absolute():
        key_path = config_path.resolve().parent / key_path
    try:
        signing = load_or_create_signing_key(key_path, settings.algorithm)
    except ValueError as exc:
        raise ConfigError(str(config_path), "signing_key", str(exc)) from exc
    return IssuerConfig(settings=settings, key=signing)


def load_or_create_signing_key(path: Path, algorithm: SigningAlgorithm) -> SigningKey:
    """Load the PEM key at `path`; if there is none, generate one and save it readable by the owner only."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        pem = _generate_and_save(path, algorithm)
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key") from exc
    return signing_key(private_key, algorithm)


def signing_key(private_key: object, algorithm: SigningAlgorithm) -> SigningKey:
    """Wrap a private key, checking it fits the algorithm (P-256 for ES256, RSA ≥ 2048 for RS256)."""
    if algorithm == "ES256":
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise ValueError("ES256 needs a P-256 EC private key")
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        thumbprint_members: tuple[str, ...] = ("crv", "kty", "x", "y")
    else:
        if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < 2048:
            raise ValueError("RS256 needs an RSA private key of at least 2048 bits")
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        thumbprint_members = ("e", "kty", "n")
    # RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace.
    canonical = json.dumps({name: jwk[name] for name in thumbprint_members}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode("ascii")
    public_jwk = {**{name: str(value) for name, value in jwk.items()}, "kid": kid, "use": "sig", "alg": algorithm}
    return SigningKey(algorithm=algorithm, kid=kid, private_key=private_key, public_jwk=public_jwk)


def generate_private_key(algorithm: SigningAlgorithm) -> SigningPrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def _generate_and_save(path: Path, algorithm: SigningAlgorithm) -> bytes:
    pem = generate_private_key(algorithm).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: if another process created the key meanwhile, use theirs rather than overwrite it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    logger.warning("generated a new %s signing key at %s", algorithm, path)
    return pem
