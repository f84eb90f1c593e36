"""``python -m iocane.cli``: the ``iocane`` command."""

import sys

from iocane.cli import main

sys.exit(main())
