"""Allow ``python -m kxform``."""

from __future__ import annotations

import sys

from kxform.cli import main

sys.exit(main())
