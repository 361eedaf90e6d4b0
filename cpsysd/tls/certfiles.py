"""Key and certificate files on disk: safe writes, passphrases, the local CA directory.

Every operation checks all of its input (paths, host names, key type, validity, passphrases,
existing files) before it creates a key, and writes nothing unless everything succeeded: each
file is staged in its own directory by :func:`cpsysd.fsutil.stage_unique` (a private key
is mode 0600 from its first byte, never written then chmod-ed), fsync-ed, and only then
published. Without ``force`` a file is published with link(2), which fails instead of
replacing a file that appeared meanwhile; with ``force`` with rename(2), atomically. Key
material never reaches a message, a log or stdout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cpsysd import fsutil
from cpsysd.credentials import passphrase_from_file
from cpsysd.errors import TLSError
from cpsysd.tls.names import chain_path_for, check_days, parse_hosts
from cpsysd.tls.pki import (
    Certificate,
    CertificateAuthority,
    KeyType,
    LeafCert,
    PrivateKey,
    certificate_request,
    self_signed_cert,
)
from cpsysd.tls.x509 import utc_now, verify_chain

KEY_MODE = 0o600
PUBLIC_MODE = 0o644
CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"
MAX_PASSPHRASE = 1023  # OpenSSL's PEM passphrase buffer is 1024 bytes with the NUL


@dataclass(frozen=True)
class OutputFile:
    """One file an operation writes: where, what, and with which mode."""

    path: Path
    data: bytes
    mode: int


def _os_problem(err: OSError, path: Path) -> TLSError:
    if err.errno == errno.ENOSPC:
        return TLSError(f"no space left on the device holding {path.parent}")
    return TLSError(f"cannot write {path}: {err.strerror or err}")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise TLSError(f"{what} {path} is a directory, not a file") from None
    except OSError as err:
        raise TLSError(f"cannot read {what} {path}: {err.strerror or err}") from None


def check_outputs(paths: list[Path], force: bool) -> None:
    """Refuse duplicate paths, missing directories, and existing files unless ``force``."""
    if len({os.path.abspath(p) for p in paths}) != len(paths):
        raise TLSError(
            "the same file is named twice", "give the certificate, key and chain distinct names"
        )
    for path in paths:
        if not path.parent.is_dir():
            raise TLSError(f"directory {path.parent} does not exist", "create it first")
        if path.is_dir():
            raise TLSError(f"{path} is a directory", "name a file")
        if (path.exists() or path.is_symlink()) and not force:
            raise TLSError(f"{path} already exists", "pass --force to replace it")


def sweep_stale_staging(path: Path) -> list[Path]:
    """Remove the staging files of ``path`` that killed writers left
    (:func:`cpsysd.fsutil.sweep_stale_staging`)."""
    return fsutil.sweep_stale_staging(path)


def _stage(output: OutputFile) -> Path:
    return fsutil.stage_unique(output.path, output.data, output.mode)


def write_outputs(outputs: list[OutputFile], force: bool) -> None:
    """Publish all ``outputs`` or none: stage every file, then link/rename each into place."""
    check_outputs([o.path for o in outputs], force)
    for output in outputs:
        sweep_stale_staging(output.path)
    staged: list[Path] = []
    published: list[Path] = []
    current = outputs[0].path
    try:
        for output in outputs:
            current = output.path
            staged.append(_stage(output))
        for temp, output in zip(staged, outputs, strict=True):
            current = output.path
            fsutil.publish(temp, output.path, replace=force)  # EEXIST rather than clobber
            published.append(output.path)
        for directory in {o.path.parent for o in outputs}:
            current = directory
            fsutil.fsync_dir(directory)
    except OSError as err:
        for temp in staged:
            with contextlib.suppress(OSError):
                temp.unlink()
        if not force:  # only files this call created; with force the old ones are gone anyway
            for path in published:
                with contextlib.suppress(OSError):
                    path.unlink()
        if err.errno == errno.EEXIST:
            raise TLSError(
                f"{current} appeared while writing", "pass --force to replace it"
            ) from None
        raise _os_problem(err, current) from None


def read_passphrase(file: str | None = None, credential: str | None = None) -> bytes | None:
    """The passphrase from a file or from ``$CREDENTIALS_DIRECTORY/NAME`` (systemd.exec(5)
    "Credentials"); None when neither is given. One trailing newline is dropped."""
    if file and credential:
        raise TLSError("give --passphrase-file or --passphrase-credential, not both")
    if credential:
        if credential in (".", "..") or "/" in credential or not credential.isprintable():
            raise TLSError(
                f"{credential!r} is not a credential name",
                "give the NAME of LoadCredential=NAME:PATH",
            )
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise TLSError(
                "--passphrase-credential needs $CREDENTIALS_DIRECTORY",
                "run it in a unit with LoadCredential=, or use --passphrase-file",
            )
        source = Path(directory) / credential
    elif file:
        source = Path(file)
    else:
        return None
    data = _read(source, "passphrase file")
    data = passphrase_from_file(data)
    if not data:
        raise TLSError(f"passphrase file {source} is empty", "put the passphrase in it")
    if len(data) > MAX_PASSPHRASE:
        raise TLSError(f"passphrase in {source} is longer than {MAX_PASSPHRASE} bytes")
    return data


def _key_output(path: Path, key: PrivateKey, passphrase: bytes | None) -> OutputFile:
    return OutputFile(path, key.pem(passphrase).bytes(), KEY_MODE)


def summary(cert: Certificate) -> str:
    """One line about a certificate: subject, names, expiry."""
    names = " ".join(cert.hosts) or "no subjectAltName"
    return f"{cert.subject} [{names}] {cert.key_description}, valid until {cert.not_after:%Y-%m-%d}"


def make_self_signed(
    cert: Path,
    key: Path,
    hosts: list[str],
    key_type: KeyType,
    days: int,
    passphrase: bytes | None = None,
    force: bool = False,
) -> LeafCert:
    """Write a new key and a self-signed server certificate for ``hosts``."""
    parse_hosts(hosts)
    check_days(days)
    check_outputs([cert, key], force)
    leaf = self_signed_cert(*hosts, key_type=key_type, days=days)
    write_outputs(
        [
            _key_output(key, leaf.private_key, passphrase),
            OutputFile(cert, leaf.cert_pem.bytes(), PUBLIC_MODE),
        ],
        force,
    )
    return leaf


def _make_directories(directory: Path) -> list[Path]:
    """``mkdir -p``: missing parents 0755 (traversable for the services), ``directory`` itself
    0700. Returns what it created, deepest last, for removal on failure."""
    return fsutil.make_directories(directory, 0o700)


def create_ca(
    directory: Path,
    key_type: KeyType,
    days: int,
    passphrase: bytes | None = None,
    force: bool = False,
    common_name: str | None = None,
) -> CertificateAuthority:
    """Create the local CA in ``directory`` (made 0700, with its parents, if missing): ca.key
    (0600) and ca.pem. Nothing is left behind when it fails."""
    check_days(days)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise TLSError(f"{existing} exists and is not a directory")
    cert_path, key_path = directory / CA_CERT_NAME, directory / CA_KEY_NAME
    if not force and (cert_path.exists() or key_path.exists()):
        raise TLSError(
            f"a CA already exists in {directory}",
            "use it with cert issue --ca, or pass --force to replace it",
        )
    name = common_name or f"cpsysd local CA {os.uname().nodename[:24]} {secrets.token_hex(4)}"
    ca = CertificateAuthority.create(key_type, days, name)
    made: list[Path] = []
    try:
        made = _make_directories(directory)
        write_outputs(
            [
                _key_output(key_path, ca.private_key, passphrase),
                OutputFile(cert_path, ca.cert_pem.bytes(), PUBLIC_MODE),
            ],
            force,
        )
    except (OSError, TLSError) as err:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        if isinstance(err, OSError):
            raise _os_problem(err, directory) from None
        raise
    return ca


def load_ca(directory: Path, passphrase: bytes | None = None) -> CertificateAuthority:
    """The CA that :func:`create_ca` wrote to ``directory``."""
    if not directory.is_dir():
        raise TLSError(
            f"CA directory {directory} does not exist", "create it with: cpsysd cert ca --dir DIR"
        )
    cert_pem = _read(directory / CA_CERT_NAME, "CA certificate")
    key_pem = _read(directory / CA_KEY_NAME, "CA key")
    return CertificateAuthority.from_pem(cert_pem, key_pem, passphrase, str(directory))


def issue_from_ca(
    ca_dir: Path,
    cert: Path,
    key: Path,
    hosts: list[str],
    key_type: KeyType,
    days: int,
    passphrase: bytes | None = None,
    ca_passphrase: bytes | None = None,
    force: bool = False,
    chain: Path | None = None,
) -> tuple[LeafCert, Path]:
    """Write a new key, a certificate issued by the CA in ``ca_dir`` and its chain file."""
    parse_hosts(hosts)
    check_days(days)
    chain = chain or chain_path_for(cert)
    check_outputs([cert, key, chain], force)
    ca = load_ca(ca_dir, ca_passphrase)
    if ca.certificate.not_after < utc_now():
        raise TLSError(
            f"the CA in {ca_dir} expired on {ca.certificate.not_after:%Y-%m-%d}", "create a new one"
        )
    leaf = ca.issue_leaf_cert(*hosts, key_type=key_type, days=days)
    write_outputs(
        [
            _key_output(key, leaf.private_key, passphrase),
            OutputFile(cert, leaf.cert_pem.bytes(), PUBLIC_MODE),
            OutputFile(chain, leaf.chain_pem.bytes(), PUBLIC_MODE),
        ],
        force,
    )
    return leaf, chain


def make_csr(
    key: Path,
    out: Path,
    hosts: list[str],
    key_type: KeyType,
    passphrase: bytes | None = None,
    force: bool = False,
) -> bool:
    """Write a CSR for ``hosts`` to ``out``, signed by the key in ``key`` when it exists (it is
    reused, never replaced), else by a new key written there. Returns True for a new key."""
    parse_hosts(hosts)
    if key.exists():
        private = PrivateKey.from_pem(_read(key, "key"), passphrase, str(key))
        check_outputs([out], force)
        write_outputs(
            [OutputFile(out, certificate_request(private, *hosts).bytes(), PUBLIC_MODE)], force
        )
        return False
    check_outputs([key, out], force)
    private = PrivateKey.generate(key_type)
    csr = certificate_request(private, *hosts)
    write_outputs(
        [_key_output(key, private, passphrase), OutputFile(out, csr.bytes(), PUBLIC_MODE)], force
    )
    return True


def show_lines(path: Path) -> list[str]:
    """What ``cert show`` prints for each certificate in ``path`` (never key material)."""
    certs = Certificate.list_from_pem(_read(path, "certificate"), str(path))
    now = utc_now()
    lines: list[str] = []
    for index, cert in enumerate(certs, 1):
        left = (cert.not_after - now).days
        state = f"{left} days left" if left >= 0 else f"expired {-left} days ago"
        if now < cert.not_before:
            state = "not valid yet"
        heading = f"{path}" if len(certs) == 1 else f"{path} (certificate {index} of {len(certs)})"
        self_signed = " (self-signed)" if cert.issuer == cert.subject else ""
        lines += [
            heading,
            f"  subject:     {cert.subject}",
            f"  names:       {', '.join(cert.hosts) or '(no subjectAltName)'}",
            f"  issuer:      {cert.issuer}{self_signed}",
            f"  valid from:  {cert.not_before:%Y-%m-%d %H:%M:%S} UTC",
            f"  valid until: {cert.not_after:%Y-%m-%d %H:%M:%S} UTC ({state})",
            f"  key type:    {cert.key_description}",
            f"  CA:          {'yes' if cert.is_ca else 'no'}",
            f"  SHA-256:     {cert.fingerprint_sha256}",
        ]
    return lines


def check_certificate(
    path: Path,
    key: Path | None = None,
    ca: Path | None = None,
    days: int = 30,
    passphrase: bytes | None = None,
) -> str:
    """Raise TLSError listing every problem (expired or expiring within ``days``, key mismatch,
    chain not verifying against ``ca``); return a one-line report when there is none."""
    if days < 0:
        raise TLSError(
            f"--days {days} is negative", "give the number of days of notice, e.g. --days 30"
        )
    certs = Certificate.list_from_pem(_read(path, "certificate"), str(path))
    leaf, now, problems, good = certs[0], utc_now(), [], []
    left = leaf.not_after - now
    if now > leaf.not_after:
        problems.append(f"expired on {leaf.not_after:%Y-%m-%d %H:%M} UTC")
    elif now < leaf.not_before:
        problems.append(f"not valid before {leaf.not_before:%Y-%m-%d %H:%M} UTC")
    elif left.days < days:
        problems.append(
            f"expires on {leaf.not_after:%Y-%m-%d} (in {left.days} days, less than {days})"
        )
    else:
        good.append(f"valid until {leaf.not_after:%Y-%m-%d} ({left.days} days)")
    if key is not None:
        try:
            matches = PrivateKey.from_pem(_read(key, "key"), passphrase, str(key)).matches(leaf)
        except TLSError as err:
            problems.append(err.message)
        else:
            (good if matches else problems).append(
                f"key {key} {'matches' if matches else 'does not match the certificate'}"
            )
    if ca is not None:
        try:
            anchor = verify_chain(
                certs, Certificate.list_from_pem(_read(ca, "CA file"), str(ca)), now
            )
            good.append(f"chain verifies up to {anchor.subject}")
        except TLSError as err:
            problems.append(err.message)
    if problems:
        raise TLSError(f"{path}: " + "; ".join(problems))
    return f"{path}: ok, " + ", ".join(good)
