"""Reading certificates: the fields ``cpsysd cert show`` prints, and chain verification.

Works with cryptography 38 (Debian bookworm) and later: APIs added since (``*_utc`` validity
properties in 42, ``verify_directly_issued_by`` in 40, ``load_pem_x509_certificates`` in 39) are
guarded or avoided. Imported only by cert commands (through :mod:`cpsysd.tls.pki`), never by
``cpsysd serve``.
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cpsysd.errors import TLSError
from cpsysd.tls.names import KeyType

if TYPE_CHECKING:
    from collections.abc import Sequence

CLOCK_SKEW = datetime.timedelta(hours=1)  # notBefore is back-dated for clients whose clocks lag
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class Blob:
    """PEM bytes handed out by the objects of this module (``.bytes()``, as in trustme)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def bytes(self) -> bytes:
        """The data as ``bytes``."""
        return self._data

    def __repr__(self) -> str:
        return f"<Blob of {len(self._data)} bytes>"  # never the content: it may be a key


def utc_now() -> datetime.datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.datetime.now(datetime.UTC)


def key_description(public_key: object) -> str:
    """``RSA 2048 bits`` or ``EC secp256r1``: what ``cert show`` prints as the key type."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size} bits"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    return type(public_key).__name__


def spki(public_key: object) -> bytes:
    """The DER SubjectPublicKeyInfo: equal for a key and its certificate."""
    encode = getattr(public_key, "public_bytes")  # noqa: B009 - every public key type has it
    data: bytes = encode(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def key_type_of(public_key: object) -> KeyType | None:
    """The KeyType of a certificate's or key's public half, None when cpsysd would not make it."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}.get(
            public_key.curve.name
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        try:
            return KeyType(f"rsa-{public_key.key_size}")
        except ValueError:
            return None
    return None


class Certificate:
    """An X.509 certificate with the fields ``cpsysd cert show`` prints."""

    def __init__(self, cert: x509.Certificate) -> None:
        self.x509 = cert

    @classmethod
    def list_from_pem(cls, data: bytes, source: str = "certificate") -> list[Certificate]:
        """Every certificate in a PEM file (a leaf, a chain or a bundle), in file order."""
        blocks = _PEM_CERT.findall(data)
        if not blocks:
            if b"PRIVATE KEY-----" in data:
                raise TLSError(
                    f"{source} is a private key, not a certificate", "give the certificate file"
                )
            raise TLSError(
                f"{source}: no PEM certificate in it",
                "give a file with -----BEGIN CERTIFICATE-----",
            )
        try:
            return [cls(x509.load_pem_x509_certificate(block)) for block in blocks]
        except ValueError as err:
            raise TLSError(f"{source}: malformed certificate: {err}") from None

    @property
    def pem(self) -> Blob:
        return Blob(self.x509.public_bytes(serialization.Encoding.PEM))

    @property
    def subject(self) -> str:
        return self.x509.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.x509.issuer.rfc4514_string()

    @property
    def hosts(self) -> tuple[str, ...]:
        """The subjectAltNames, as ``DNS:name`` and ``IP:address``."""
        try:
            san = self.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return ()
        names = [f"DNS:{name}" for name in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{address.compressed}" for address in san.get_values_for_type(x509.IPAddress)]
        return tuple(names)

    @property
    def not_before(self) -> datetime.datetime:
        utc = getattr(self.x509, "not_valid_before_utc", None)  # cryptography >= 42
        return (
            utc
            if isinstance(utc, datetime.datetime)
            else self.x509.not_valid_before.replace(tzinfo=datetime.UTC)
        )

    @property
    def not_after(self) -> datetime.datetime:
        utc = getattr(self.x509, "not_valid_after_utc", None)  # cryptography >= 42
        return (
            utc
            if isinstance(utc, datetime.datetime)
            else self.x509.not_valid_after.replace(tzinfo=datetime.UTC)
        )

    @property
    def lifetime_days(self) -> int:
        """Whole days from notBefore to notAfter, without the clock-skew back-dating."""
        return max(
            1, round((self.not_after - self.not_before - CLOCK_SKEW) / datetime.timedelta(days=1))
        )

    @property
    def key_description(self) -> str:
        return key_description(self.x509.public_key())

    @property
    def fingerprint_sha256(self) -> str:
        return self.x509.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def is_ca(self) -> bool:
        try:
            return bool(
                self.x509.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            )
        except x509.ExtensionNotFound:
            return False

    def is_signed_by(self, issuer: Certificate) -> bool:
        """True when ``issuer`` is named as this certificate's issuer and its key signed it."""
        if self.x509.issuer != issuer.x509.subject:
            return False
        verify = getattr(self.x509, "verify_directly_issued_by", None)  # cryptography >= 40
        try:
            if verify is not None:
                verify(issuer.x509)
                return True
            public = issuer.x509.public_key()
            digest = self.x509.signature_hash_algorithm
            if isinstance(public, ec.EllipticCurvePublicKey) and digest is not None:
                public.verify(
                    self.x509.signature, self.x509.tbs_certificate_bytes, ec.ECDSA(digest)
                )
                return True
            if isinstance(public, rsa.RSAPublicKey) and digest is not None:
                public.verify(
                    self.x509.signature, self.x509.tbs_certificate_bytes, padding.PKCS1v15(), digest
                )
                return True
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False
        return False

    def __repr__(self) -> str:
        return f"<Certificate {self.subject}>"


def _check_period(cert: Certificate, now: datetime.datetime, role: str) -> None:
    where = f"chain does not verify: the {role} {cert.subject}"
    if now < cert.not_before:
        raise TLSError(f"{where} is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC")
    if now > cert.not_after:
        raise TLSError(f"{where} expired on {cert.not_after:%Y-%m-%d %H:%M} UTC")


def verify_chain(
    certs: Sequence[Certificate],
    anchors: Sequence[Certificate],
    now: datetime.datetime | None = None,
) -> Certificate:
    """Check that ``certs[0]`` (the leaf; the rest are intermediates, any order) chains up to one
    of ``anchors`` (trusted CA certificates): names, signatures, CA flags and validity periods.

    A certificate that is itself among the anchors is trusted as it is (a self-signed server
    certificate given as its own CA file, as curl --cacert and Python's ssl accept). Returns the
    anchor reached; raises TLSError naming the first broken link. Hostnames are not checked.
    """
    moment = now or utc_now()
    current, role = certs[0], "certificate"
    pool = list(certs[1:])
    for _depth in range(10):
        _check_period(current, moment, role)
        if any(current.x509 == anchor.x509 for anchor in anchors):
            return current
        anchor = next((a for a in anchors if current.is_signed_by(a)), None)
        issuer = anchor or next((c for c in pool if current.is_signed_by(c)), None)
        if issuer is None:
            raise TLSError(
                f"chain does not verify: nothing in the CA file issued {current.subject} "
                f"(issuer {current.issuer})",
                "give the CA certificate that issued it with --ca",
            )
        if not issuer.is_ca:
            raise TLSError(
                f"chain does not verify: the issuer {issuer.subject} is not a CA certificate"
            )
        if anchor is not None:
            _check_period(anchor, moment, "CA certificate")
            return anchor
        pool.remove(issuer)
        current, role = issuer, "intermediate certificate"
    raise TLSError("chain does not verify: the chain is longer than 10 certificates")
