"""Bounds on a description, checked before anything expensive looks at it.

A description may come from someone else (a package, a repository), and ``cpsysd serve`` reads
the resolved one at every start, so these checks must cost next to nothing on an ordinary file:

- the file must be a regular file of at most :data:`DESCRIPTION_MAX` bytes. It is opened with
  ``O_NONBLOCK`` so a FIFO cannot block us, and read only up to the cap so ``/dev/zero`` cannot
  fill the memory;
- no key may have more than :data:`KEY_DOTS_MAX` dots. Python's tomllib (3.11) is quadratic in
  the parts of one dotted key: a 40 KB key ``a.a.a...`` costs it 4 s and 1.5 GB, 80 KB 6.3 GB.
  Ordinary descriptions have a handful of dots, so the scan runs only past
  :data:`_DOTS_TO_SCAN` of them;
- free text (``description``, ``environment`` values) is at most :data:`TEXT_MAX` bytes, far
  below systemd's 1 MiB line limit (LONG_LINE_MAX) even after escaping doubles it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from cpsysd.errors import SpecError

DESCRIPTION_MAX = 256 * 1024
KEY_DOTS_MAX = 64
TEXT_MAX = 4096
_DOTS_TO_SCAN = KEY_DOTS_MAX
# One TOML key: bare or quoted parts joined by dots, spaces allowed around them (TOML 1.0).
# Text inside string values may match too; 64 dot-joined words are no prose either.
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
_DEEP_KEY = rf"{_PART}(?:[ \t]*\.[ \t]*{_PART}){{{KEY_DOTS_MAX + 1}}}"


def read_description(file: Path) -> str:
    """The text of ``file``, refused (``SpecError`` naming it) unless it is a regular file of
    at most :data:`DESCRIPTION_MAX` bytes of UTF-8 with no over-deep key. FileNotFoundError
    passes through for the caller's own message."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(file, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise SpecError(str(file), f"cannot read: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(str(file), "is not a regular file", "give the path of a TOML file")
        data = b""
        while len(data) <= DESCRIPTION_MAX:  # st_size may lie (procfs): read to the cap only
            chunk = os.read(fd, DESCRIPTION_MAX + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as err:
        raise SpecError(str(file), f"cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) > DESCRIPTION_MAX:
        raise SpecError(
            str(file),
            f"is larger than {DESCRIPTION_MAX // 1024} KiB",
            "a description is a few lines; keep long texts in files it names",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(str(file), f"cannot read: {err}") from None
    check_key_depth(str(file), text)
    return text


def check_key_depth(source: str, text: str) -> None:
    """Refuse TOML with a key of more than :data:`KEY_DOTS_MAX` dots, before tomllib sees it."""
    if text.count(".") <= _DOTS_TO_SCAN:
        return
    found = re.search(_DEEP_KEY, text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise SpecError(
            source,
            f"line {line} has a key of more than {KEY_DOTS_MAX} dotted parts",
            "nest tables at most a few levels deep",
        )


def check_text_length(fieldname: str, text: str) -> None:
    """Refuse free text longer than :data:`TEXT_MAX` bytes (UTF-8), naming the field."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > TEXT_MAX:
        raise SpecError(
            fieldname,
            f"is {size} bytes long, more than the {TEXT_MAX} bytes cpsysd allows",
            f"shorten it to at most {TEXT_MAX} bytes",
        )
