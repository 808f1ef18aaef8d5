"""`python -m api ...` is `studio ...` (what workers.stack.embedded spawns, with the same interpreter)."""

import sys

from api.cli import main

sys.exit(main())
