"""cpsysd: run CherryPy (and any WSGI) applications the systemd way.

For the app itself: :func:`credential` reads a secret from the ``credentials`` table."""

from cpsysd.credentials import CredentialError, credential

__all__ = ["CredentialError", "credential"]
__version__ = "0.1.0"
