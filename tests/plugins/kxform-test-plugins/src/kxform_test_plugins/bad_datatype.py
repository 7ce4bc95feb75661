"""A plugin whose declared V2 input has a datatype that does not exist: it must fail when loaded."""

from __future__ import annotations

from typing import Any

from kxform import Context, TensorSpec, Transformer


class Plugin(Transformer):
    inputs = (TensorSpec("x", "FP33", (3,)),)

    def preprocess(self, instances: list[Any], ctx: Context) -> Any:
        return instances
