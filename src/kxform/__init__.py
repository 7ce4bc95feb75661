"""kxform: pluggable KServe transformers in front of NVIDIA Triton.

A plugin subclasses ``kxform.Transformer`` and registers it in the ``kxform.transformers``
entry-point group; ``kxform serve --transformer NAME`` finds it.
"""

from __future__ import annotations

from kxform.call import Call
from kxform.errors import DecodeError, KxformError, RequestError
from kxform.spec import ModelSpec, TensorSpec
from kxform.tensors import Outputs
from kxform.transformer import Context, Transformer

__all__ = [
    "Call",
    "Context",
    "DecodeError",
    "KxformError",
    "ModelSpec",
    "Outputs",
    "RequestError",
    "TensorSpec",
    "Transformer",
    "__version__",
]

__version__ = "0.1.0"
