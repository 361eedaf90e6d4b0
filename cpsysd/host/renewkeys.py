"""The key side of a renewal, shared by :mod:`cpsysd.host.renew` (local CA, self-signed) and
:mod:`cpsysd.host.acmerenew` (ACME): the passphrases, and whether a key is its certificate's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd.errors import TLSError

if TYPE_CHECKING:
    from cpsysd.description.model import TLSConfig
    from cpsysd.tls.pki import Certificate


def _read_passphrase(path: str | None, credential: str) -> bytes | None:
    """The credential ``credential`` when the job runs in NAME-cert-renew.service (it has
    ``LoadCredential=``), else the file ``path`` (``cpsysd cert renew`` run by hand); None
    when there is neither."""
    from cpsysd.tls.certfiles import read_passphrase

    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and os.path.isfile(os.path.join(directory, credential)):
        return read_passphrase(credential=credential)
    return read_passphrase(path) if path else None


def _encrypted(path: Path) -> bool:
    """Whether a PEM key file is encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or the
    traditional ``Proc-Type: 4,ENCRYPTED``); False when it is missing or unreadable."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return False
    marks = (b"-----BEGIN ENCRYPTED ", b"Proc-Type: 4,ENCRYPTED")
    return any(line.startswith(marks) for line in lines)


def _passphrases(tls: TLSConfig) -> tuple[bytes | None, bytes | None]:
    """``(key passphrase, CA key passphrase)``. Refuses to go on without a passphrase for an
    encrypted key (the renewal would write the new key unencrypted) or an encrypted CA key."""
    from cpsysd.credentials import CREDENTIAL_CA_PASSPHRASE, CREDENTIAL_PASSPHRASE
    from cpsysd.tls.certfiles import CA_KEY_NAME

    passphrase = _read_passphrase(tls.passphrase_file, CREDENTIAL_PASSPHRASE)
    if passphrase is None and _encrypted(Path(tls.key)):
        raise TLSError(
            f"{tls.key} is encrypted, and a renewal would write the new key unencrypted",
            "set [tls] passphrase_file to the file holding its passphrase",
        )
    ca_passphrase = None
    if tls.ca_dir:
        ca_passphrase = _read_passphrase(tls.ca_passphrase_file, CREDENTIAL_CA_PASSPHRASE)
        ca_key = Path(tls.ca_dir) / CA_KEY_NAME
        if ca_passphrase is None and _encrypted(ca_key):
            raise TLSError(
                f"the CA key {ca_key} is encrypted",
                "set [tls] ca_passphrase_file to the file holding its passphrase",
            )
    return passphrase, ca_passphrase


def _key_matches(key_path: Path, cert: Certificate, passphrase: bytes | None = None) -> bool:
    """False when the key is missing or is not the certificate's: a run killed between the
    key's and the certificate's rename leaves a new key beside the old certificate, which the
    app cannot load, so renewing then repairs the pair. A key that cannot be read (with
    ``passphrase``, if any) counts as matching: it cannot be checked here."""
    from cpsysd.tls.pki import PrivateKey

    try:
        key = PrivateKey.from_pem(key_path.read_bytes(), passphrase, source=str(key_path))
    except FileNotFoundError:
        return False
    except (OSError, TLSError):
        return True
    return key.matches(cert)
