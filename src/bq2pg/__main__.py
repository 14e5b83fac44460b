"""``python -m bq2pg``."""

from bq2pg.cli import main

main()
