"""A second claim on the name 'test-duplicate'."""

from __future__ import annotations

from typing import Any

import kxform


class Plugin(kxform.Transformer):
    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        return instances
