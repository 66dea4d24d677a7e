# SPDX-License-Identifier: MIT
"""python3 -m zpipe_worker: see _cli.HELP."""

import sys

from ._cli import main

sys.exit(main())
