"""``python -m rmwatch``: the same entry point as the ``rmwatch`` command."""

import sys

from rmwatch.cli.main import main

sys.exit(main())
