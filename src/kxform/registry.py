"""The transformers one ``kxform serve`` process serves, by the name clients call, and their load state.

Readiness is every configured transformer loaded and its predictor model ready. Unloading and
loading (the model repository API) is possible only when ``--enable_model_repository_api`` is on;
a load instantiates the plugin again from its entry point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from kxform.errors import ModelNotFoundError
from kxform.model import TransformerModel

__all__ = ["Registry"]


@dataclass
class _Slot:
    model: TransformerModel
    loaded: bool = True


class Registry:
    """Name -> TransformerModel; ``build`` makes a fresh one for a repository load."""

    def __init__(self, models: list[TransformerModel], build: Callable[[str], TransformerModel]) -> None:
        self._slots = {model.name: _Slot(model) for model in models}
        self._build = build

    def names(self) -> list[str]:
        return list(self._slots)

    def models(self) -> list[TransformerModel]:
        return [slot.model for slot in self._slots.values()]

    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            served = ", ".join(self._slots) or "none"
            raise ModelNotFoundError(f"no model named '{name}' is served here (served: {served})")
        return slot

    def get(self, name: str) -> TransformerModel:
        """The loaded model ``name``, or ModelNotFoundError (404) naming the served ones."""
        slot = self._slot(name)
        if not slot.loaded:
            raise ModelNotFoundError(f"model '{name}' is unloaded; load it through the model repository API")
        return slot.model

    def is_loaded(self, name: str) -> bool:
        return self._slot(name).loaded

    async def model_ready(self, name: str) -> bool:
        return await self.get(name).healthy()

    async def ready(self) -> bool:
        """Every configured transformer loaded, and each one's predictor model ready."""
        if not all(slot.loaded for slot in self._slots.values()):
            return False
        return all(await asyncio.gather(*(slot.model.healthy() for slot in self._slots.values())))

    def unload(self, name: str) -> None:
        slot = self._slot(name)
        if slot.loaded:
            slot.model.stop()
            slot.loaded = False

    def load(self, name: str) -> None:
        slot = self._slot(name)
        if not slot.loaded:
            slot.model = self._build(name)
            slot.loaded = True

    def index(self) -> list[dict[str, str]]:
        return [
            {"name": name, "state": "READY" if slot.loaded else "UNAVAILABLE"} for name, slot in self._slots.items()
        ]
