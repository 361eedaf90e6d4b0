"""What services get through ``LoadCredential=`` (systemd.exec(5), "Credentials"): the credential
names, shared by the unit generator (:mod:`cpsysd.render.units`, :mod:`cpsysd.render.renew`) and
the runtime
(:mod:`cpsysd.runtime.tls`), and the one rule for reading a passphrase file. A module of its own,
so the runtime imports it without the generator side."""

from __future__ import annotations

# Names, not secrets (hence the noqa): the files appear under $CREDENTIALS_DIRECTORY by them.
CREDENTIAL_CERT = "tls-cert"
CREDENTIAL_KEY = "tls-key"
CREDENTIAL_CHAIN = "tls-chain"
CREDENTIAL_PASSPHRASE = "tls-key-passphrase"  # noqa: S105
# Only NAME-cert-renew.service gets the CA key's passphrase; the app never does.
CREDENTIAL_CA_PASSPHRASE = "tls-ca-passphrase"  # noqa: S105


def passphrase_from_file(data: bytes) -> bytes:
    """A passphrase file's bytes as the passphrase: one trailing line break (``\\n``, then a
    ``\\r`` before it) is dropped, so that ``echo secret > file`` works. Every reader (cpsysd
    cert, the renewal job, cpsysd serve) uses this: the file that encrypted a key must open it
    everywhere."""
    return data.removesuffix(b"\n").removesuffix(b"\r")
