"""``python -m keeptar``."""

from keeptar.cli import main

main()
