"""Keys, certificates, a local CA and CSRs, made in-process with ``cryptography`` (no openssl).

Shaped like trustme: objects own a key and a certificate and hand out PEM :class:`Blob` s.
``CertificateAuthority.create().issue_leaf_cert("localhost", "127.0.0.1")`` gives a
:class:`LeafCert`; :func:`self_signed_cert` gives one signed by its own key. Nothing here
touches the file system (:mod:`cpsysd.tls.certfiles` writes files, keys with mode 0600 from the
first byte) and nothing here prints: errors are :class:`~cpsysd.errors.TLSError`.

Works with cryptography 38 (Debian bookworm) and later (see :mod:`cpsysd.tls.x509`). Only the
CLI's cert commands import this module, never ``cpsysd serve``: cryptography costs start-up time.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cpsysd.errors import TLSError
from cpsysd.tls.names import HostKind, HostName, KeyType, check_days, parse_hosts, parse_key_type
from cpsysd.tls.x509 import (
    CLOCK_SKEW,
    Blob,
    Certificate,
    key_description,
    key_type_of,
    spki,
    utc_now,
    verify_chain,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Blob",
    "Certificate",
    "CertificateAuthority",
    "KeyType",
    "LeafCert",
    "PrivateKey",
    "certificate_request",
    "parse_key_type",
    "self_signed_cert",
    "verify_chain",
]

PrivateKeyObject = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]  # noqa: UP007
_ORGANIZATION = "cpsysd"


class PrivateKey:
    """A private key (RSA or EC). ``repr`` and ``str`` never show key material."""

    def __init__(self, key: PrivateKeyObject) -> None:
        self._key = key

    @classmethod
    def generate(cls, key_type: KeyType = KeyType.EC_P256) -> PrivateKey:
        """A fresh key of ``key_type``."""
        if key_type is KeyType.EC_P256:
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if key_type is KeyType.EC_P384:
            return cls(ec.generate_private_key(ec.SECP384R1()))
        return cls(
            rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.value[4:]))
        )

    @classmethod
    def from_pem(
        cls, data: bytes, passphrase: bytes | None = None, source: str = "key"
    ) -> PrivateKey:
        """Load a PEM private key; ``source`` names it in errors (a path, usually)."""
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (
            TypeError
        ) as err:  # cryptography says "password was not given" or "... not encrypted"
            if passphrase is None:
                raise TLSError(
                    f"{source}: the private key is encrypted",
                    "pass --passphrase-file or --passphrase-credential",
                ) from None
            raise TLSError(
                f"{source}: the private key is not encrypted but a passphrase was given",
                "drop the passphrase option",
            ) from err
        except ValueError:
            if passphrase is not None and b"ENCRYPTED" in data:
                raise TLSError(
                    f"{source}: wrong passphrase for the private key",
                    "give the passphrase the key was encrypted with",
                ) from None
            raise TLSError(
                f"{source}: not a PEM private key",
                "give the key file written by cpsysd cert or openssl",
            ) from None
        except UnsupportedAlgorithm:
            raise TLSError(
                f"{source}: unsupported private key algorithm", "use an RSA or EC key"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TLSError(
                f"{source}: {type(key).__name__} keys are not supported", "use an RSA or EC key"
            )
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
            raise TLSError(
                f"{source}: RSA key of {key.key_size} bits is too weak",
                "create a new key, at least rsa-2048",
            )
        return cls(key)

    @property
    def description(self) -> str:
        """E.g. ``EC secp256r1`` or ``RSA 3072 bits``."""
        return key_description(self._key.public_key())

    @property
    def key_type(self) -> KeyType | None:
        """The KeyType this key is one of, or None for e.g. an RSA key of another size."""
        return key_type_of(self._key.public_key())

    def pem(self, passphrase: bytes | None = None) -> Blob:
        """PKCS#8 PEM; encrypted (cryptography's best available scheme) with a passphrase."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return Blob(
            self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )

    @property
    def public_key_pem(self) -> Blob:
        """The public half, as ``openssl pkey -pubout`` prints it."""
        public = self._key.public_key()
        return Blob(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def matches(self, cert: Certificate) -> bool:
        """True when ``cert`` carries this key's public half."""
        return spki(self._key.public_key()) == spki(cert.x509.public_key())

    def _hash(self) -> hashes.SHA256 | hashes.SHA384:
        # P-384 pairs with SHA-384 (RFC 5480 section 4); SHA-256 otherwise.
        if isinstance(self._key, ec.EllipticCurvePrivateKey) and self._key.curve.key_size >= 384:
            return hashes.SHA384()
        return hashes.SHA256()

    def __repr__(self) -> str:
        return f"<PrivateKey {self.description}>"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),  # ub-common-name, RFC 5280
        ]
    )


def _general_names(hosts: Sequence[HostName]) -> list[x509.GeneralName]:
    return [
        x509.IPAddress(host.ip) if host.kind is HostKind.IP else x509.DNSName(host.value)
        for host in hosts
    ]


def _validity(
    days: int, validity: tuple[datetime.datetime, datetime.datetime] | None
) -> tuple[datetime.datetime, datetime.datetime]:
    if validity is not None:
        return validity  # explicit dates: for tests of expiry checks
    now = utc_now()
    return now - CLOCK_SKEW, now + datetime.timedelta(days=check_days(days))


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    span: tuple[datetime.datetime, datetime.datetime],
) -> x509.CertificateBuilder:
    public = key._key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(span[0])
        .not_valid_after(span[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _server_extensions(
    builder: x509.CertificateBuilder, key: PrivateKey, hosts: Sequence[HostName]
) -> x509.CertificateBuilder:
    is_rsa = isinstance(key._key, rsa.RSAPrivateKey)
    return (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # RSA key exchange needs keyEncipherment; ECDHE with any key needs only digitalSignature
            # (RFC 5280 section 4.2.1.3, RFC 8446 section 4.4.2.2).
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
    )


@dataclass(frozen=True)
class LeafCert:
    """A server certificate with its key and the chain up to (and including) its CA.

    ``chain`` is empty for a self-signed certificate; otherwise it holds the issuing CA's
    certificate (what ``cpsysd cert issue`` writes to the ``.chain.pem`` file).
    """

    private_key: PrivateKey
    certificate: Certificate
    chain: tuple[Certificate, ...] = ()

    def private_key_pem(self, passphrase: bytes | None = None) -> Blob:
        return self.private_key.pem(passphrase)

    @property
    def cert_pem(self) -> Blob:
        return self.certificate.pem

    @property
    def chain_pem(self) -> Blob:
        return Blob(b"".join(cert.pem.bytes() for cert in self.chain))

    @property
    def cert_chain_pems(self) -> list[Blob]:
        """The certificate first, then the chain (trustme's shape)."""
        return [self.cert_pem, *(cert.pem for cert in self.chain)]

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        """Make ``ctx`` present this certificate, chain and key (through a 0600 temp file:
        ``SSLContext.load_cert_chain`` only reads paths)."""
        with tempfile.TemporaryDirectory(prefix="cpsysd-tls-") as private_dir:  # mode 0700
            path = Path(private_dir) / "bundle.pem"
            with path.open("xb") as file:  # inside a 0700 directory: nobody else can open it
                file.write(
                    self.private_key_pem().bytes()
                    + b"".join(b.bytes() for b in self.cert_chain_pems)
                )
            ctx.load_cert_chain(str(path))


class CertificateAuthority:
    """A local CA: a self-signed CA certificate and the key that signs leaf certificates."""

    def __init__(self, key: PrivateKey, certificate: Certificate) -> None:
        if not key.matches(certificate):
            raise TLSError(
                "the CA key does not belong to the CA certificate",
                "give the ca.key made with ca.pem",
            )
        if not certificate.is_ca:
            raise TLSError(
                f"{certificate.subject} is not a CA certificate (basicConstraints CA:FALSE)"
            )
        self.private_key = key
        self.certificate = certificate

    @classmethod
    def create(
        cls,
        key_type: KeyType = KeyType.EC_P256,
        days: int = 3650,
        common_name: str = "cpsysd local CA",
    ) -> CertificateAuthority:
        """A new CA that may sign leaf certificates only (pathLenConstraint 0)."""
        key = PrivateKey.generate(key_type)
        name = _name(common_name)
        public = key._key.public_key()
        cert = (
            _builder(name, name, key, _validity(days, None))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .sign(key._key, key._hash())
        )
        return cls(key, Certificate(cert))

    @classmethod
    def from_pem(
        cls, cert_pem: bytes, key_pem: bytes, passphrase: bytes | None = None, source: str = "CA"
    ) -> CertificateAuthority:
        certs = Certificate.list_from_pem(cert_pem, f"{source} certificate")
        return cls(PrivateKey.from_pem(key_pem, passphrase, f"{source} key"), certs[0])

    @property
    def cert_pem(self) -> Blob:
        return self.certificate.pem

    def private_key_pem(self, passphrase: bytes | None = None) -> Blob:
        return self.private_key.pem(passphrase)

    def issue_leaf_cert(
        self,
        *hosts: str,
        key_type: KeyType = KeyType.EC_P256,
        days: int = 365,
        key: PrivateKey | None = None,
        validity: tuple[datetime.datetime, datetime.datetime] | None = None,
    ) -> LeafCert:
        """A server certificate for ``hosts`` (DNS names and IP addresses), signed by this CA."""
        names = parse_hosts(hosts)
        span = _validity(days, validity)
        leaf_key = key or PrivateKey.generate(key_type)
        ski = self.certificate.x509.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        cert = (
            _server_extensions(
                _builder(_name(names[0].value), self.certificate.x509.subject, leaf_key, span),
                leaf_key,
                names,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(self.private_key._key, self.private_key._hash())
        )
        return LeafCert(leaf_key, Certificate(cert), (self.certificate,))

    def configure_trust(self, ctx: ssl.SSLContext) -> None:
        """Make ``ctx`` trust certificates this CA issued."""
        ctx.load_verify_locations(cadata=self.cert_pem.bytes().decode("ascii"))


def self_signed_cert(
    *hosts: str,
    key_type: KeyType = KeyType.EC_P256,
    days: int = 365,
    key: PrivateKey | None = None,
    validity: tuple[datetime.datetime, datetime.datetime] | None = None,
) -> LeafCert:
    """A server certificate for ``hosts`` signed by its own key (clients trust the cert itself)."""
    names = parse_hosts(hosts)
    span = _validity(days, validity)
    leaf_key = key or PrivateKey.generate(key_type)
    subject = _name(names[0].value)
    public = leaf_key._key.public_key()
    cert = (
        _server_extensions(_builder(subject, subject, leaf_key, span), leaf_key, names)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(leaf_key._key, leaf_key._hash())
    )
    return LeafCert(leaf_key, Certificate(cert))


def certificate_request(key: PrivateKey, *hosts: str) -> Blob:
    """A PKCS#10 CSR (PEM) for ``hosts``, to hand to a public CA."""
    names = parse_hosts(hosts)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0].value[:64])]))
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .sign(key._key, key._hash())
    )
    return Blob(csr.public_bytes(serialization.Encoding.PEM))
