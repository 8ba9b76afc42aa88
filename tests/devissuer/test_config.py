from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcp_gateway.devissuer.config import IssuerClient, SigningAlgorithm, load_issuer_config, signing_key
from mcp_gateway.errors import ConfigError
from tests.auth._support import rsa_key

from ._support import AGENT_SECRET, BOT_SECRET, write_issuer_toml

RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjh"
    "Mstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5h"
    "ajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_a_missing_signing_key_is_generated_owner_readable_only_and_reused_on_the_next_load(tmp_path: Path) -> None:
    first = load_issuer_config(write_issuer_toml(tmp_path))
    key_file = tmp_path / "keys" / "issuer-key.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    second = load_issuer_config(tmp_path / "issuer.toml")
    assert first.key.kid == second.key.kid
    assert isinstance(first.key.private_key, ec.EllipticCurvePrivateKey)
    assert set(first.key.public_jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}  # no private "d"


def test_an_rs256_issuer_generates_an_rsa_key_of_at_least_2048_bits(tmp_path: Path) -> None:
    config = load_issuer_config(write_issuer_toml(tmp_path, algorithm="RS256"))
    assert config.key.algorithm == "RS256"
    assert config.key.private_key.key_size >= 2048
    assert "d" not in config.key.public_jwk


def _rfc7638_thumbprint(jwk: dict[str, str], members: tuple[str, ...]) -> str:
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def test_the_procedure_below_reproduces_rfc7638_s_worked_example() -> None:
    jwk = {"kty": "RSA", "e": "AQAB", "n": RFC7638_N}
    assert _rfc7638_thumbprint(jwk, ("e", "kty", "n")) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(("algorithm", "members"), [("ES256", ("crv", "kty", "x", "y")), ("RS256", ("e", "kty", "n"))])
def test_the_kid_is_the_rfc7638_thumbprint_of_the_public_key(
    algorithm: SigningAlgorithm, members: tuple[str, ...]
) -> None:
    private = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else rsa_key().private_key
    key = signing_key(private, algorithm)
    assert key.kid == _rfc7638_thumbprint(dict(key.public_jwk), members)
    assert key.public_jwk["kid"] == key.kid


def test_client_secrets_match_in_plain_and_hashed_form_and_nothing_else(tmp_path: Path) -> None:
    clients = load_issuer_config(write_issuer_toml(tmp_path)).settings.clients
    assert clients["agent-1"].secret_matches(AGENT_SECRET)
    assert not clients["agent-1"].secret_matches(AGENT_SECRET + "x")
    assert not clients["agent-1"].secret_matches("")
    assert clients["bot"].secret_matches(BOT_SECRET)
    assert not clients["bot"].secret_matches(clients["bot"].secret_sha256 or "")


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[clients.both]\nsecret = "0123456789abcdef"\nsecret_sha256 = "' + "0" * 64 + '"\n', "clients.both"),
        ("[clients.none]\nscopes = []\n", "clients.none"),
        ('[clients.short]\nsecret = "short"\n', "clients.short.secret"),
        ('[clients.d]\nsecret = "0123456789abcdef"\nscopes = ["a"]\ndefault_scopes = ["b"]\n', "clients.d"),
        ('[clients.s]\nsecret = "0123456789abcdef"\nscopes = ["has space"]\n', "clients.s.scopes.0"),
        ("", "unknown_key"),
    ],
    ids=["two-secrets", "no-secret", "short-secret", "default-not-subset", "bad-scope", "unknown-key"],
)
def test_config_mistakes_are_config_errors_naming_the_key(tmp_path: Path, extra: str, key: str) -> None:
    path = write_issuer_toml(tmp_path, extra=extra)
    if not extra:
        path.write_text("unknown_key = 1\n" + path.read_text())
    with pytest.raises(ConfigError) as raised:
        load_issuer_config(path)
    assert raised.value.key == key
    assert raised.value.file == str(path)


@pytest.mark.parametrize("issuer", ["ftp://x", "http://127.0.0.1:9001?x=1", "http://127.0.0.1#f", "not a url"])
def test_the_issuer_must_be_an_http_url_without_query_or_fragment(tmp_path: Path, issuer: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_issuer_config(write_issuer_toml(tmp_path, issuer=issuer))
    assert raised.value.key == "issuer"


def test_a_signing_key_of_the_wrong_type_for_the_algorithm_is_a_config_error(tmp_path: Path) -> None:
    path = write_issuer_toml(tmp_path, algorithm="RS256")
    (tmp_path / "keys").mkdir()
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "keys" / "issuer-key.pem").write_bytes(pem)
    with pytest.raises(ConfigError) as raised:
        load_issuer_config(path)
    assert raised.value.key == "signing_key"


def test_an_unreadable_or_invalid_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_issuer_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("issuer = ")
    with pytest.raises(ConfigError):
        load_issuer_config(tmp_path / "bad.toml")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "issuer-key.pem").write_text("not a key")
    with pytest.raises(ConfigError):
        load_issuer_config(write_issuer_toml(tmp_path))


def test_issuer_client_granted_by_default_falls_back_to_all_scopes() -> None:
    client = IssuerClient(secret="0123456789abcdef", scopes=("a", "b"))
    assert client.granted_by_default() == ("a", "b")
