"""Input checks for certificates: host names, key types and validity periods.

What a ``HOST`` argument means in a subjectAltName:

A HOST that parses as an IP address becomes an ``iPAddress`` SAN, anything else must be a valid
DNS name (RFC 1034 section 3.5 "preferred name syntax", RFC 1123 section 2.1) and becomes a
``dNSName`` SAN. Browsers and Python's ``ssl`` match IP addresses only against IP SANs
(RFC 6125 section 1.7.2, RFC 2818 section 3.1), so putting ``127.0.0.1`` into a DNS SAN yields a
certificate that never verifies: that mistake is refused here, as is the reverse. The explicit
forms ``DNS:NAME`` and ``IP:ADDRESS`` (openssl's subjectAltName syntax) are accepted too.

Pure: no cryptography import, so the CLI and the unit renderer can validate input cheaply.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cpsysd.errors import TLSError

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_DAYS = 36500  # beyond this notAfter leaves the four-digit years of GeneralizedTime
MAX_DNS_LENGTH = 253  # RFC 1035 section 2.3.4, without the trailing dot


class HostKind(StrEnum):
    """Which subjectAltName type a host goes into."""

    DNS = "DNS"
    IP = "IP"


@dataclass(frozen=True)
class HostName:
    """A validated host: ``value`` is a lower-case A-label DNS name or a compressed IP address."""

    kind: HostKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address of an IP host (ValueError for a DNS host)."""
        if self.kind is not HostKind.IP:
            raise ValueError(f"{self.value} is a DNS name")
        return ipaddress.ip_address(self.value)


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise TLSError(
            f"{text!r}: an IPv6 zone index (%{address.scope_id}) cannot go into a certificate",
            "give the address without %ZONE",
        )
    return address


def _dns_name(text: str, original: str) -> str:
    if text.endswith("."):
        raise TLSError(f"{original!r} ends with a dot", "give the name without the trailing dot")
    try:
        # Internationalised names go into certificates as A-labels (RFC 5280 section 7.2).
        ascii_name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise TLSError(
            f"{original!r} is not a valid DNS name", "use letters, digits, '-' and '.'"
        ) from None
    name = ascii_name.lower()
    if not name or len(name) > MAX_DNS_LENGTH:
        raise TLSError(
            f"{original!r} is not a valid DNS name", f"use 1 to {MAX_DNS_LENGTH} characters"
        )
    labels = name.split(".")
    if labels[0] == "*":
        # Wildcards only as the whole left-most label, above at least two labels
        # (RFC 6125 section 6.4.3; browsers refuse "*.com").
        if len(labels) < 3:
            raise TLSError(
                f"{original!r}: a wildcard needs two labels after it", "e.g. *.example.com"
            )
        labels = labels[1:]
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise TLSError(
                f"{original!r} is not a valid DNS name (label {label!r})",
                "labels are 1-63 letters, digits and inner '-'; no '_', '*' or spaces",
            )
    if labels[-1].isdigit():
        # "10.0.0.256" or "1.2.3": meant as an IP address, but not a valid one; a DNS name's
        # top-level label is never all-numeric (RFC 3696 section 2).
        raise TLSError(
            f"{original!r} is neither a valid IP address nor a DNS name", "check the address"
        )
    return name


def parse_host(text: str) -> HostName:
    """Parse one HOST argument: ``NAME``, ``ADDRESS``, ``DNS:NAME`` or ``IP:ADDRESS``.

    Raises TLSError with a one-line message for a malformed name, an IP address given as a DNS
    name (``DNS:127.0.0.1``) and a DNS name given as an IP address (``IP:example.com``).
    """
    if not isinstance(text, str) or not text:
        raise TLSError("empty host name", "give a DNS name or an IP address")
    if not text.isprintable() or any(ch.isspace() for ch in text):
        shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
        raise TLSError(
            f"{shown!r} contains spaces or control characters", "give one name per argument"
        )
    prefix, sep, rest = text.partition(":")
    kind = prefix.upper() if sep and prefix.upper() in ("DNS", "IP") else None
    if kind == "IP":
        address = _as_ip(rest)
        if address is None:
            raise TLSError(
                f"{rest!r} is not an IP address", f"drop the IP: prefix if {rest!r} is a DNS name"
            )
        return HostName(HostKind.IP, address.compressed)
    if kind == "DNS":
        if _as_ip(rest) is not None:
            raise TLSError(
                f"{rest!r} is an IP address, not a DNS name",
                "drop the DNS: prefix; it then becomes an IP subjectAltName, which clients match",
            )
        return HostName(HostKind.DNS, _dns_name(rest, rest))
    address = _as_ip(text)
    if address is not None:
        return HostName(HostKind.IP, address.compressed)
    return HostName(HostKind.DNS, _dns_name(text, text))


def parse_hosts(texts: list[str] | tuple[str, ...]) -> tuple[HostName, ...]:
    """Parse every HOST (at least one), dropping duplicates but keeping the order given."""
    if not texts:
        raise TLSError(
            "no host names given",
            "name at least one DNS name or IP address, e.g. localhost 127.0.0.1",
        )
    hosts = [parse_host(text) for text in texts]
    return tuple(dict.fromkeys(hosts))


class KeyType(StrEnum):
    """The private-key types cpsysd creates. EC P-256 is the default: small, fast, universal."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


_ALIASES = {
    "p256": "ec-p256",
    "p-256": "ec-p256",
    "prime256v1": "ec-p256",
    "secp256r1": "ec-p256",
    "ecdsa": "ec-p256",
    "ec": "ec-p256",
    "p384": "ec-p384",
    "p-384": "ec-p384",
    "secp384r1": "ec-p384",
    "rsa": "rsa-2048",
}


def parse_key_type(text: str) -> KeyType:
    """``ec-p256``, ``ec-p384``, ``rsa-2048``, ``rsa-3072`` or ``rsa-4096`` (and common aliases);
    RSA below 2048 bits and anything else raise TLSError."""
    name = text.strip().lower().replace("_", "-")
    name = _ALIASES.get(name, name)
    if re.fullmatch(r"rsa-?\d+", name):
        name = "rsa-" + name.removeprefix("rsa").lstrip("-")
        if int(name[4:]) < 2048:
            raise TLSError(
                f"key type {text!r} is too weak: RSA keys need at least 2048 bits",
                "use --key-type rsa-2048 (or larger) or ec-p256",
            )
    try:
        return KeyType(name)
    except ValueError:
        known = ", ".join(kind.value for kind in KeyType)
        raise TLSError(f"unknown key type {text!r}", f"use one of {known}") from None


def check_days(days: int) -> int:
    """A validity period in days: 1 to MAX_DAYS."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise TLSError(
            f"invalid validity of {days} days: a certificate must be valid for at least one day",
            f"use --days 1 to {MAX_DAYS}",
        )
    return days


def chain_path_for(cert: Path) -> Path:
    """Where ``cert issue`` puts the chain: ``server.pem`` -> ``server.chain.pem``."""
    return cert.with_name(cert.name.removesuffix(cert.suffix) + ".chain.pem")
