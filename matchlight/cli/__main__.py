"""``python -m matchlight.cli``: the same as the ``matchlight`` command."""

import sys

from matchlight.cli import main

sys.exit(main())
