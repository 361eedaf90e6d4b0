"""``python -m cpsysd.host.readme [README.md]`` (``just fields``): rewrite the README's table of
description fields from :data:`cpsysd.description.fields.FIELDS` (the text comes from
:func:`cpsysd.description.docs.with_readme_table`; tests/test_fields.py fails when it drifts)."""

from __future__ import annotations

import sys
from pathlib import Path

from cpsysd import fsutil
from cpsysd.description.docs import with_readme_table


def update_readme(path: Path) -> bool:
    """Rewrite ``path``'s field table; True if it changed."""
    text = path.read_text(encoding="utf-8")
    updated = with_readme_table(text)
    if updated == text:
        return False
    fsutil.atomic_write(path, updated.encode(), 0o644)
    return True


if __name__ == "__main__":
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print(f"{readme}: {'updated' if update_readme(readme) else 'unchanged'}")
