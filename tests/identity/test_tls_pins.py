"""SPKI pins: computed the RFC 7469 way and enforced before any request byte is sent."""

from __future__ import annotations

import base64
import hashlib

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mcp_gateway.errors import UpstreamIdentityError
from mcp_gateway.identity.tls_pins import spki_sha256, spki_verifier


def _der(cert: trustme.LeafCert) -> bytes:
    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER)


def test_the_pin_is_the_base64_sha256_of_the_subject_public_key_info() -> None:
    leaf = trustme.CA().issue_cert("upstream.test")
    certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert spki_sha256(_der(leaf)) == base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_a_pinned_key_passes_and_any_other_key_is_an_identity_error() -> None:
    ca = trustme.CA()
    pinned, other = ca.issue_cert("upstream.test"), ca.issue_cert("upstream.test")
    verify = spki_verifier([spki_sha256(_der(pinned))])
    verify(_der(pinned))
    with pytest.raises(UpstreamIdentityError, match="not pinned"):
        verify(_der(other))


def test_garbage_instead_of_a_certificate_is_an_identity_error() -> None:
    with pytest.raises(UpstreamIdentityError):
        spki_verifier(["AAAA"])(b"not a certificate")
