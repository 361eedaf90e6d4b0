"""cpsysd: run CherryPy (and any WSGI) applications the systemd way."""

__version__ = "0.1.0"
