"""Triton's ``model_config.proto`` (the ``ModelConfig`` message), loaded without the rest of tritonclient.grpc.

``tritonclient/grpc/__init__.py`` loads Triton's ``grpc_service.proto``, whose ``inference.*``
symbols collide with kserve's V2 protos in protobuf's default pool; a process that serves with
kserve can only load ``model_config_pb2.py`` on its own, which is what this does.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["model_config_pb2"]

_MODULE = "kxform._triton_model_config_pb2"


def model_config_pb2() -> ModuleType:
    """The generated module of ``model_config.proto`` shipped in tritonclient."""
    if _MODULE not in sys.modules:
        package = importlib.util.find_spec("tritonclient")
        if package is None or not package.submodule_search_locations:
            raise ImportError("tritonclient is not installed: pip install 'tritonclient[all]'")
        path = f"{next(iter(package.submodule_search_locations))}/grpc/model_config_pb2.py"
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[_MODULE]
