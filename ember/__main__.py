"""``python -m ember`` runs the ``ember`` command."""

import sys

from ember.tools.cli import main

sys.exit(main())
