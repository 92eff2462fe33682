"""``python -m nextclick``: the command line (also what ``torchrun -m nextclick`` runs)."""

import sys

from nextclick.cli import main

sys.exit(main())
