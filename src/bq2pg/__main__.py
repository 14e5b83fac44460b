"""``python -m bq2pg``."""

from bq2pg.cli.app import main

main()
