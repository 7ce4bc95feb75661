"""A plugin module that cannot be imported, as happens when a dependency is missing."""

from __future__ import annotations

import kxform_missing_dependency  # noqa: F401 - the point of this module: the import fails

Plugin = None
