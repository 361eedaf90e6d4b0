"""The ``[tls]`` ACME fields: their checkers, and the rules between them and the rest.

Pure, like the rest of :mod:`cpsysd.description`; the protocol is in :mod:`cpsysd.tls.acme`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cpsysd.description.checks import _text
from cpsysd.description.model import AcmeChallenge
from cpsysd.errors import SpecError

if TYPE_CHECKING:
    from cpsysd.description.model import AppSpec

# The named directories (https://letsencrypt.org/docs/acme-protocol-updates/).
DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
_URL = re.compile(r"https://[A-Za-z0-9.\-\[\]:]+(/[\x21-\x7e]*)?")
_EMAIL = re.compile(r"[^@\s<>\"',;]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")


def check_directory(fieldname: str, value: object) -> str:
    """A named CA or the https:// URL of an ACME directory (RFC 8555 section 7.1.1)."""
    text = _text(fieldname, value)
    if text in DIRECTORIES:
        return DIRECTORIES[text]
    if not _URL.fullmatch(text):
        raise SpecError(
            fieldname,
            f"{text!r} is neither a known CA nor an https:// directory URL",
            f"use {' or '.join(repr(name) for name in DIRECTORIES)}, or the CA's directory URL",
        )
    return text


def check_email(fieldname: str, value: object) -> str:
    text = _text(fieldname, value)
    if not _EMAIL.fullmatch(text):
        raise SpecError(fieldname, f"{text!r} is not an e-mail address", 'e.g. "ops@example.org"')
    return text


def check_acme_rules(spec: AppSpec) -> None:
    """The rules between the ACME fields and the rest of the description."""
    tls = spec.tls
    if tls is None:
        return
    if tls.acme is None:
        for key in ("acme_email", "acme_ca_bundle", "acme_account_key", "acme_challenge_dir",
                    "acme_status_dir"):  # fmt: skip
            if getattr(tls, key) is not None:
                raise SpecError(
                    f"tls.{key}", "needs acme", 'add acme = "letsencrypt", or remove it'
                )
        return
    if tls.ca_dir:
        raise SpecError(
            "tls.ca_dir", "and acme are two sources of the certificate", "keep one of them"
        )
    if not tls.hosts:
        raise SpecError(
            "tls.hosts",
            "is empty: the CA needs the names to certify",
            'add hosts = ["example.org"]',
        )
    for i, host in enumerate(tls.hosts):
        if not re.search(r"[A-Za-z]", host) or ":" in host:
            raise SpecError(
                f"tls.hosts[{i}]",
                f"{host!r} is an address; ACME certifies DNS names here",
                "list the site's DNS names",
            )
    if tls.acme_challenge is AcmeChallenge.TLS_ALPN_01:
        _check_tls_alpn(spec)
        return
    plain = [listener for listener in spec.listeners if not listener.tls and not listener.is_unix]
    if not plain and spec.nginx is None:
        raise SpecError(
            "tls.acme_challenge",
            "http-01 needs a plain HTTP listener (the CA fetches http://NAME/.well-known/...)",
            'add listen = ["80", "443=https"], or an [nginx] site on port 80',
        )


def _check_tls_alpn(spec: AppSpec) -> None:
    """tls-alpn-01 (RFC 8737) is answered in the runtime's TLS handshake, so the CA must reach
    the runtime's own TLS listener: never through nginx, which terminates TLS itself."""
    if spec.nginx is not None:
        raise SpecError(
            "tls.acme_challenge",
            "tls-alpn-01 cannot pass [nginx]: nginx terminates TLS, the app never sees the "
            "CA's handshake",
            'use acme_challenge = "http-01" (the nginx site serves its answers)',
        )
    https = [listener for listener in spec.listeners if listener.tls and not listener.is_unix]
    if not https:
        raise SpecError(
            "tls.acme_challenge",
            "tls-alpn-01 needs an https listener (the CA connects to NAME:443 over TLS)",
            'add listen = ["443=https"], or use acme_challenge = "http-01"',
        )
    tls = spec.tls
    public_ca = tls is not None and tls.acme in DIRECTORIES.values()
    if public_ca and not any(listener.port == 443 for listener in https):
        # RFC 8737 section 3: the validation connects to port 443; a private CA (pebble's
        # tlsPort) may be told otherwise, a public one cannot
        raise SpecError(
            "tls.acme_challenge",
            "tls-alpn-01 needs the https listener on port 443 (the CA connects to NAME:443)",
            'listen on "443=https", or use acme_challenge = "http-01"',
        )
