"""``python -m sicell.cli`` is ``sicell``."""

from sicell.cli import main

main()
