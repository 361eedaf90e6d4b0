"""The one rule for reading a passphrase file, shared by ``cpsysd cert``, the renewal job and
``cpsysd serve`` (a module of its own: the runtime imports it without the generator side)."""

from __future__ import annotations


def passphrase_from_file(data: bytes) -> bytes:
    """A passphrase file's bytes as the passphrase: one trailing line break (``\\n``, then a
    ``\\r`` before it) is dropped, so that ``echo secret > file`` works. Every reader uses this:
    the file that encrypted a key must open it everywhere."""
    return data.removesuffix(b"\n").removesuffix(b"\r")
