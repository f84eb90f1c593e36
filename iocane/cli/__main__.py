"""``python -m iocane.cli``: the ``iocane`` command."""

import sys

from iocane.cli import console_main

sys.exit(console_main())
