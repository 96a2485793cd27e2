"""``python -m roomkeeper`` is the ``roomkeeper`` command."""

import sys

from roomkeeper.cli import main

sys.exit(main())
