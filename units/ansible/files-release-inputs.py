"""What the next release of the app would be made of, summed up (``cpsysd export ansible``).

The role runs this on each app host with cpsysd's virtualenv: argv is the app's directory, then
files (the description, the environment file). It prints one SHA-256 over every file's path
relative to the directory and its bytes, and over the installed cpsysd's RECORD (a new wheel
makes a new release too). Bytecode is left out: ``cpsysd install`` compiles it into the app's
directory, so it would change the sum without changing the app. The role records the sum beside
the id of the release it deployed, and deploys again only when either differs from the host's.
"""

import hashlib
import os
import sys
from importlib.metadata import distribution


def _add(total: "hashlib._Hash", label: str, path: str) -> None:
    total.update(label.encode("utf-8", "surrogateescape") + b"\0")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    total.update(digest.digest())


def main(argv: list[str]) -> None:
    total = hashlib.sha256()
    root = argv[1]
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith((".pyc", ".pyo")):
                path = os.path.join(directory, name)
                _add(total, "app/" + os.path.relpath(path, root), path)
    for path in argv[2:]:
        _add(total, path, path)
    total.update((distribution("cpsysd").read_text("RECORD") or "").encode())
    print(total.hexdigest())


if __name__ == "__main__":
    main(sys.argv)
