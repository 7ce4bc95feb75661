"""A real Triton Inference Server for local development and tests (``kxform triton``)."""

from __future__ import annotations

from kxform.triton.repository import DerivedModel, derive_repository, read_model_config
from kxform.triton.server import TritonPorts, TritonServer

__all__ = ["DerivedModel", "TritonPorts", "TritonServer", "derive_repository", "read_model_config"]
