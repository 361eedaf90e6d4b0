"""ACME Renewal Information (ARI, RFC 9773): when the CA suggests renewing a certificate.

The CA's directory may name a ``renewalInfo`` URL; a plain unauthenticated GET of
``renewalInfo/CERTID`` (no JWS, RFC 9773 section 4.1) answers a ``suggestedWindow`` and a
``Retry-After`` for the next question. Debian's python3-acme 2.1 has no ARI, so this asks with
``requests`` (the library ``acme`` sends its own requests with) and the same trust
(``[tls] acme_ca_bundle``). Every answer is bounded (size, time) and checked; anything wrong is
an :class:`AriError`, which the renewal job turns into a fallback to its own schedule, never
into a failed renewal.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

from cpsysd.errors import TLSError
from cpsysd.tls.x509 import Certificate

ARI_TIMEOUT = 10  # seconds per request: the renewal itself must not wait on a slow endpoint
MAX_BODY = 64 * 1024  # a directory or a renewalInfo answer is a few hundred bytes
# RFC 9773 section 4.3: no Retry-After means ask again in six hours; clamp what the CA says
# to between a minute and a day, as the RFC suggests, so a bad header neither hammers nor
# silences it.
DEFAULT_RECHECK = datetime.timedelta(hours=6)
MIN_RECHECK = datetime.timedelta(minutes=1)
MAX_RECHECK = datetime.timedelta(days=1)


class AriError(TLSError):
    """The CA's renewal information is unavailable or malformed (a reason for a fallback)."""


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested window for one certificate, and when to ask again."""

    start: datetime.datetime
    end: datetime.datetime
    recheck: datetime.timedelta  # Retry-After, clamped
    explanation: str | None = None  # explanationURL, when the CA sent one


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def cert_id(cert: Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(the serial's DER
    INTEGER content bytes: big-endian two's complement, so a leading zero byte when the top bit
    is set), both unpadded."""
    from cryptography import x509

    try:
        aki = cert.x509.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise AriError("the certificate has no authority key identifier") from None
    if not aki.key_identifier:
        raise AriError("the certificate's authority key identifier has no keyIdentifier")
    serial = cert.x509.serial_number
    der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{_b64url(aki.key_identifier)}.{_b64url(der)}"


def _get(url: str, ca_bundle: str | None) -> tuple[Any, bytes]:
    """GET ``url``: the response and at most MAX_BODY bytes of its body, or AriError. Each
    wait is ARI_TIMEOUT, and the whole body must arrive within it too: a server dripping one
    byte at a time must not hold the renewal job."""
    import requests

    deadline = time.monotonic() + ARI_TIMEOUT
    body = b""
    try:
        with requests.get(
            url,
            timeout=ARI_TIMEOUT,
            verify=ca_bundle or True,
            stream=True,
            # identity: MAX_BODY then bounds what is held, not a compressed size
            headers={"User-Agent": "cpsysd", "Accept-Encoding": "identity"},
        ) as response:
            for chunk in response.iter_content(4096):
                body += chunk
                if len(body) > MAX_BODY:
                    raise AriError(f"{url} answered more than {MAX_BODY} bytes")
                if time.monotonic() > deadline:
                    raise AriError(f"{url} did not answer within {ARI_TIMEOUT} s")
    except requests.exceptions.RequestException as err:
        raise AriError(f"cannot GET {url}: {' '.join(str(err).split())[:200]}") from None
    if response.status_code != 200:
        raise AriError(f"{url} answered HTTP {response.status_code}")
    return response, body


def _json_object(body: bytes, url: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise AriError(f"{url} answered no JSON") from None
    if not isinstance(document, dict):
        raise AriError(f"{url} answered JSON that is not an object")
    return document


def renewal_info_url(directory: str, ca_bundle: str | None) -> str | None:
    """The directory's ``renewalInfo`` URL, or None when the CA offers no ARI."""
    url = _json_object(_get(directory, ca_bundle)[1], directory).get("renewalInfo")
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith("https://") or len(url) > 2000:
        raise AriError(f"the directory's renewalInfo is not an https:// URL: {str(url)[:80]!r}")
    return url


def _timestamp(value: object, what: str) -> datetime.datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise AriError(f"suggestedWindow {what} is not an RFC 3339 time")
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise AriError(f"suggestedWindow {what} {value!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise AriError(f"suggestedWindow {what} {value!r} has no time zone")
    return when.astimezone(datetime.UTC)


def retry_after(value: str | None, now: datetime.datetime) -> datetime.timedelta:
    """A Retry-After header (seconds or an HTTP date, RFC 9110 section 10.2.3), clamped."""
    if value is None:
        return DEFAULT_RECHECK
    text = value.strip()
    if text.isdigit():
        wait = datetime.timedelta(seconds=min(int(text[:12]), 10**9))
    else:
        try:
            wait = email.utils.parsedate_to_datetime(text) - now
        except (TypeError, ValueError):
            return DEFAULT_RECHECK
    return min(max(wait, MIN_RECHECK), MAX_RECHECK)


def fetch_window(
    info_url: str, cid: str, ca_bundle: str | None, now: datetime.datetime
) -> RenewalWindow:
    """The CA's suggested window for the certificate ``cid`` (RFC 9773 section 4.2)."""
    url = f"{info_url.rstrip('/')}/{cid}"
    response, body = _get(url, ca_bundle)
    window = _json_object(body, url).get("suggestedWindow")
    if not isinstance(window, dict):
        raise AriError(f"{url} answered no suggestedWindow")
    start = _timestamp(window.get("start"), "start")
    end = _timestamp(window.get("end"), "end")
    if end < start:
        raise AriError(f"{url}: suggestedWindow ends ({end:%Y-%m-%d %H:%M}) before it starts")
    explanation = _json_object(body, url).get("explanationURL")
    return RenewalWindow(
        start,
        end,
        retry_after(response.headers.get("Retry-After"), now),
        explanation[:300] if isinstance(explanation, str) else None,
    )
