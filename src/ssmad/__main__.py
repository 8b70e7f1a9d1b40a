"""``python -m ssmad`` runs the command-line interface."""

from ssmad.cli import main

raise SystemExit(main())
