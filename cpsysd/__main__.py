"""``python -m cpsysd``: the same as the ``cpsysd`` console script."""

from cpsysd.cli import main

main()
