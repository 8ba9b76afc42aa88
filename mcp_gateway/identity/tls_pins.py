"""TLS key pinning: the SHA-256 of the upstream certificate's SubjectPublicKeyInfo, checked at the handshake."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mcp_gateway.errors import UpstreamIdentityError


def spki_sha256(der_certificate: bytes) -> str:
    """Base64 SHA-256 of the certificate's SPKI, the RFC 7469 §2.4 pin format (`pin-sha256`)."""
    certificate = x509.load_der_x509_certificate(der_certificate)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def spki_verifier(pins: Iterable[str]) -> Callable[[bytes], None]:
    """A `verify_peer` hook for UpstreamPool: refuses any key not pinned, before a byte is written.

    Pinning the key rather than the certificate survives re-issuance with the same key (RFC 7469 §2.4);
    CA and hostname checks stay on underneath, so a pin narrows trust and never widens it.
    """
    allowed = tuple(pins)

    def verify(der_certificate: bytes) -> None:
        try:
            presented = spki_sha256(der_certificate)
        except ValueError as exc:
            raise UpstreamIdentityError("the upstream certificate could not be parsed") from exc
        if not any(hmac.compare_digest(presented, pin) for pin in allowed):
            raise UpstreamIdentityError(f"the upstream presented key pin-sha256={presented}, which is not pinned")

    return verify
