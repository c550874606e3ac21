"""``python -m node.cli``: the same ``maia`` command (tests and the service unit use it)."""

import sys

from node.cli import main

sys.exit(main())
