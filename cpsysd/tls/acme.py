"""Certificates from an ACME CA (RFC 8555), through certbot's ``acme`` library.

:func:`obtain_certificate` registers (or finds) the account of the account key, orders a
certificate for the names, answers each http-01 challenge by writing the key authorization to
``challenge_dir/TOKEN`` (the runtime, :mod:`cpsysd.runtime.acme`, and the generated nginx site
serve that directory at ``/.well-known/acme-challenge/``) or each tls-alpn-01 challenge by writing
it to ``challenge_dir/tls-alpn-01/NAME`` (the runtime's TLS listener answers from there,
:mod:`cpsysd.runtime.alpn`), and returns the new key and the full
chain. It writes nothing but the account key (0600 from its first byte, on first use) and the
challenge files (0644: a key authorization is public, RFC 8555 section 8.3, and the app's
DynamicUser must read it); the caller publishes key and certificate, so a failure at any step
leaves the old ones in place.

Every failure is an :class:`AcmeError` naming the cause and the fix; ``retry_after`` carries the
CA's ``Retry-After`` when it sent one (rate limits, RFC 8555 section 6.6).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpsysd import fsutil
from cpsysd.errors import TLSError
from cpsysd.tls.pki import KeyType, PrivateKey
from cpsysd.tls.x509 import Certificate

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # base64url (RFC 8555 section 8.1)
ORDER_TIMEOUT = 90  # seconds for the CA to validate and issue (Let's Encrypt takes a few)
HTTP_TIMEOUT = 30
_REACH_HINT = "the job needs outbound HTTPS to the CA's directory"
_HTTP01_HINT = (
    "the CA must reach http://NAME/.well-known/acme-challenge/ on this app's plain listener "
    "(port 80, or nginx): check the names' DNS records and the firewall"
)

_TLSALPN01_HINT = (
    "the CA must reach NAME:443 over TLS on this app's https listener (not through nginx): "
    "check the names' DNS records and the firewall"
)


class AcmeError(TLSError):
    """An ACME order failed; ``retry_after`` is when the CA asked to be asked again."""

    def __init__(
        self, message: str, hint: str | None = None, retry_after: datetime.datetime | None = None
    ) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


@dataclass(frozen=True)
class AcmeOrder:
    """What to ask which CA for, and where the answers go."""

    directory: str
    hosts: tuple[str, ...]
    account_key: Path
    challenge_dir: Path
    email: str | None = None
    ca_bundle: str | None = None  # trust for the CA's own HTTPS; None: the system's
    challenge: str = "http-01"  # or "tls-alpn-01" (RFC 8737)


@dataclass(frozen=True)
class IssuedCertificate:
    key: PrivateKey
    chain: list[Certificate]  # the leaf first
    fullchain_pem: bytes


def _recording_network(**kwargs: Any) -> Any:
    """A ClientNetwork that keeps the last response: the library drops the headers when it turns
    an error document into an exception, and Retry-After is a header."""
    from acme import client

    class RecordingNetwork(client.ClientNetwork):
        last_response: Any = None

        def _send_request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:
            response = super()._send_request(method, url, *args, **kw)
            self.last_response = response
            return response

    return RecordingNetwork(**kwargs)


def _retry_after(net: Any) -> datetime.datetime | None:
    from acme import client

    response = getattr(net, "last_response", None)
    if response is None or "Retry-After" not in response.headers:
        return None
    when: datetime.datetime = client.ClientV2.retry_after(response, 0)
    return when.replace(tzinfo=datetime.UTC) if when.tzinfo is None else when


def load_account_key(path: Path) -> PrivateKey:
    """The account key at ``path``, made (EC P-256, 0600 from the first byte) when missing."""
    from cpsysd.tls import certfiles

    if not path.exists():
        key = PrivateKey.generate(KeyType.EC_P256)
        certfiles.write_outputs(
            [certfiles.OutputFile(path, key.pem().bytes(), certfiles.KEY_MODE)], force=False
        )
        return key
    return PrivateKey.from_pem(path.read_bytes(), None, source=str(path))


def _client(order: AcmeOrder, account: PrivateKey) -> tuple[Any, Any]:
    import requests
    from acme import client, messages
    from josepy import jwa, jwk

    account_jwk = jwk.JWK.load(account.pem().bytes())
    net = _recording_network(
        key=account_jwk,
        alg=jwa.ES256,
        user_agent="cpsysd",
        timeout=HTTP_TIMEOUT,
        verify_ssl=order.ca_bundle or True,
    )
    try:
        directory = client.ClientV2.get_directory(order.directory, net)
    except requests.exceptions.SSLError as err:
        raise AcmeError(
            f"the ACME server {order.directory} is not trusted: {_reason(err)}",
            "for a private CA set [tls] acme_ca_bundle to the CA file of its HTTPS certificate",
        ) from None
    except (requests.exceptions.RequestException, ValueError) as err:
        raise AcmeError(
            f"cannot reach the ACME directory {order.directory}: {_reason(err)}",
            f"check [tls] acme; {_REACH_HINT}",
        ) from None
    acme_client = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(
        email=order.email, terms_of_service_agreed=True
    )
    try:
        acme_client.new_account(registration)
    except Exception as err:
        from acme import errors

        if not isinstance(err, errors.ConflictError):
            raise
        # The key has an account already: use it (RFC 8555 section 7.3.1).
        existing = messages.RegistrationResource(uri=err.location, body=messages.Registration())
        acme_client.query_registration(existing)
    return acme_client, net


def _reason(err: BaseException) -> str:
    """The innermost cause, on one line: requests nests urllib3's reason several levels deep."""
    while err.__context__ is not None and str(err.__context__):
        err = err.__context__
    text = " ".join(str(err).split())
    return text[:300]


def sweep_challenge_answers(challenge_dir: Path) -> list[str]:
    """Remove the answers (and their staging files) a killed job left in ``challenge_dir``:
    http-01 tokens, and tls-alpn-01's ``tls-alpn-01/NAME`` files. One job runs at a time, so
    none belongs to a live order. Returns the names removed."""
    removed = []
    for directory, any_name in ((challenge_dir, False), (challenge_dir / "tls-alpn-01", True)):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                # A token is base64url (RFC 8555 section 8.1); fsutil stages as .NAME + suffix.
                name = entry.name
                if name.startswith(".") and name.endswith(fsutil.TEMP_SUFFIX):
                    name = name[1 : -len(fsutil.TEMP_SUFFIX)]
                if entry.is_file(follow_symlinks=False) and (any_name or _TOKEN.fullmatch(name)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def _challenge_type(chall: Any) -> str:
    """``"http-01"``, ``"tls-alpn-01"``, ...: acme 3 and later drop the TLSALPN01 class, so a
    tls-alpn-01 challenge arrives as UnrecognizedChallenge there (Debian's 2.1 still has it)."""
    jobj = getattr(chall, "jobj", None)
    if isinstance(jobj, dict):
        return str(jobj.get("type", ""))
    return str(chall.typ)


def _key_authorization(chall: Any, account_jwk: Any) -> str:
    """RFC 8555 section 8.1: the token, ".", the base64url SHA-256 thumbprint of the account
    key (RFC 7638), computed here as it is the same for every challenge type."""
    from josepy import b64

    jobj = getattr(chall, "jobj", None)
    token = str(jobj["token"]) if isinstance(jobj, dict) else chall.encode("token")
    if not _TOKEN.fullmatch(token):
        raise AcmeError(f"the CA sent a malformed challenge token {token[:40]!r}")
    return f"{token}.{b64.b64encode(account_jwk.thumbprint()).decode()}"


def _answer_path(order: AcmeOrder, name: str, token: str) -> Path:
    """Where the runtime looks for the answer: ``DIR/TOKEN`` for http-01 (runtime/acme.py),
    ``DIR/tls-alpn-01/NAME`` for tls-alpn-01 (runtime/alpn.py, which makes the certificate)."""
    if order.challenge == "tls-alpn-01":
        return order.challenge_dir / "tls-alpn-01" / name.lower()
    return order.challenge_dir / token


def _write_challenges(
    order: AcmeOrder, orderr: Any, account_jwk: Any, written: list[Path]
) -> list[tuple[Any, Any, Path]]:
    """Write every pending answer, each file into ``written`` (removed after the order, also
    when a later name fails here); returns ``(challenge body, response, file)`` triples. The
    key authorization is public (RFC 8555 section 8.3), so 0644: the app's DynamicUser reads
    it; tls-alpn-01's throw-away key is made by the runtime and never written (alpn.py)."""
    from acme import challenges

    answers = []
    for authz in orderr.authorizations:
        if authz.body.status.name == "valid":
            continue  # reused: the CA has validated this name for this account recently
        name = authz.body.identifier.value
        for challb in authz.body.challenges:
            if _challenge_type(challb.chall) == order.challenge:
                authorization = _key_authorization(challb.chall, account_jwk)
                path = _answer_path(order, name, authorization.partition(".")[0])
                fsutil.make_directories(path.parent, 0o755)
                written.append(path)
                fsutil.atomic_write(path, authorization.encode(), 0o644)
                # serialized as the empty object of RFC 8555 section 7.5.1; a response with no
                # field at all would be falsy, and the library would POST-as-GET instead
                response = challenges.KeyAuthorizationChallengeResponse(
                    key_authorization=authorization
                )
                answers.append((challb, response, path))
                break
        else:
            wildcard = bool(getattr(authz.body, "wildcard", False))
            offered = ", ".join(_challenge_type(c.chall) for c in authz.body.challenges)
            raise AcmeError(
                f"the CA refuses to validate {'*.' if wildcard else ''}{name} over "
                f"{order.challenge} (it offers {offered or 'nothing'})",
                "a wildcard needs dns-01, which cpsysd does not do: list each name in [tls] hosts"
                if wildcard
                else f"use a CA that validates {order.challenge}, or the other acme_challenge",
            )
    return answers


def obtain_certificate(order: AcmeOrder, key_type: KeyType = KeyType.EC_P256) -> IssuedCertificate:
    """Order a certificate for ``order.hosts`` from ``order.directory``: a new key each time."""
    import requests
    from acme import crypto_util, errors, messages

    account = load_account_key(order.account_key)
    key = PrivateKey.generate(key_type)
    written: list[Path] = []
    net = None
    try:
        acme_client, net = _client(order, account)
        csr = crypto_util.make_csr(key.pem().bytes(), list(order.hosts))
        orderr = acme_client.new_order(csr)
        answers = _write_challenges(order, orderr, acme_client.net.key, written)
        for challb, response, _ in answers:
            acme_client.answer_challenge(challb, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        finished = acme_client.poll_and_finalize(orderr, deadline)
    except errors.ValidationError as err:
        hint = _TLSALPN01_HINT if order.challenge == "tls-alpn-01" else _HTTP01_HINT
        raise AcmeError(_validation_failures(err), hint) from None
    except errors.TimeoutError:
        raise AcmeError(
            f"the CA did not finish the order within {ORDER_TIMEOUT} s", "try again later"
        ) from None
    except messages.Error as err:
        raise _ca_refusal(err, order, _retry_after(net)) from None
    except requests.exceptions.RequestException as err:
        raise AcmeError(
            f"lost the ACME server {order.directory} mid-order: {_reason(err)}",
            f"the old certificate stays; {_REACH_HINT}",
        ) from None
    finally:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
    fullchain = finished.fullchain_pem.encode()
    chain = Certificate.list_from_pem(fullchain, f"the certificate from {order.directory}")
    if not key.matches(chain[0]):
        raise AcmeError(f"the CA at {order.directory} returned a certificate for another key")
    return IssuedCertificate(key, chain, fullchain)


def _validation_failures(err: Any) -> str:
    failures = []
    for authzr in err.failed_authzrs:
        name = authzr.body.identifier.value
        details = [
            f"{c.error.typ.rsplit(':', 1)[-1]}: {c.error.detail}"
            for c in authzr.body.challenges
            if c.error is not None
        ]
        failures.append(f"{name} ({'; '.join(details) or 'invalid'})")
    return "the CA could not validate " + ", ".join(failures)


def _ca_refusal(err: Any, order: AcmeOrder, retry_after: datetime.datetime | None) -> AcmeError:
    kind = (err.typ or "").rsplit(":", 1)[-1]
    detail = " ".join(str(err.detail or err.title or kind).split())
    if kind == "rateLimited":
        when = f" until {retry_after:%Y-%m-%d %H:%M} UTC" if retry_after else ""
        return AcmeError(
            f"the CA rate-limits this account{when}: {detail}",
            "the renewal timer retries later; do not force renewals",
            retry_after,
        )
    if kind in ("rejectedIdentifier", "malformed", "unsupportedIdentifier", "caa"):
        return AcmeError(
            f"the CA refuses to certify {', '.join(order.hosts)}: {detail}",
            "list public DNS names the CA will certify in [tls] hosts",
            retry_after,
        )
    return AcmeError(f"the CA answered {kind or 'an error'}: {detail}", None, retry_after)
