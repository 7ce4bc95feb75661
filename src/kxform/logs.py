"""How kxform's processes log: one line per record, kxform's loggers at ``--log_level``."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    """kxform's loggers at ``level``, everyone else's at WARNING."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("kxform").setLevel(level)
