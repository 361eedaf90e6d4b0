"""What services get through ``LoadCredential=`` (systemd.exec(5), "Credentials"): the credential
names, shared by the unit generator (:mod:`cpsysd.render.units`, :mod:`cpsysd.render.renew`) and
the runtime (:mod:`cpsysd.runtime.tls`), the one rule for reading a passphrase file, and
:func:`credential`, with which the app reads one of its own ``credentials`` (exported as
``cpsysd.credential``). A module of its own, so the runtime and the app import it without the
generator side."""

from __future__ import annotations

import os

from cpsysd.errors import CpsysdError

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


class CredentialError(CpsysdError):
    """A credential the app asked for is not there (:func:`credential`)."""


def credential(name: str) -> str:
    """The text of credential ``name``, passed to the service by ``LoadCredential=`` from the
    description's ``credentials`` table (systemd.exec(5), "Credentials")::

        password = cpsysd.credential("db-password")

    systemd copies the file into ``$CREDENTIALS_DIRECTORY``, readable only by the service's
    user; no other service, user or ``systemctl show`` sees it. One trailing line break is
    dropped (``echo secret > file``), like a passphrase file. Raises :class:`CredentialError`
    naming what is missing and the fix. Cheap: the app may call it at import time."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialError(
            f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set, the app was not started "
            "by systemd with credentials",
            f'add {name} = "/path/of/the/file" to the credentials table and run cpsysd install',
        )
    if not name or "/" in name or name.startswith("."):
        raise CredentialError(f"credential {name!r} is not a credential name", "use its key")
    try:
        with open(os.path.join(directory, name), "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise CredentialError(
            f"credential {name!r} is not in {directory}",
            f'add {name} = "/path/of/the/file" to the credentials table and run cpsysd install',
        ) from None
    return passphrase_from_file(data).decode("utf-8")
