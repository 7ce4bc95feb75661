"""The package's public names, and what importing it pulls in."""

from __future__ import annotations

import subprocess
import sys

import kxform.codecs
from kxform.codecs import dtypes, image, tensor, text


def isort_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_reexports_every_codec_module_name() -> None:
    for module in (kxform.codecs, dtypes, image, tensor, text):
        assert module.__all__ == sorted(module.__all__, key=isort_order)
    assert set(kxform.codecs.__all__) == {*dtypes.__all__, *image.__all__, *tensor.__all__, *text.__all__}
    for name in kxform.codecs.__all__:
        assert getattr(kxform.codecs, name) is not None


def test_import_codecs_pulls_in_neither_torch_nor_a_web_framework() -> None:
    code = (
        "import sys, kxform.codecs; "
        "print(sorted(m for m in ('torch', 'torchvision', 'fastapi', 'kserve') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
