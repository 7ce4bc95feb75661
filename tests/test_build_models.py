"""``make models`` keeps a compiled ``.pt2`` while its source and torch are unchanged (no compile here)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_models() -> Any:
    spec = importlib.util.spec_from_file_location("build_models", ROOT / "tools" / "build_models.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_models"] = module  # inspect.getsource finds a class's file through its module
    spec.loader.exec_module(module)
    return module


def stamped(build_models: Any, out: Path, name: str, fingerprint: str) -> Path:
    target = out / name
    (target / "1").mkdir(parents=True)
    (target / "config.pbtxt").write_text("")
    (target / build_models.FINGERPRINT_FILE).write_text(fingerprint + "\n")
    for other in build_models.COMPANIONS.get(name, ()):
        (out / other).mkdir()
        (out / other / "config.pbtxt").write_text("")
    return target


@pytest.mark.parametrize("name", ["aoti_example", "cifar10_pt2"])
def test_a_pt2_with_the_same_fingerprint_is_kept(build_models: Any, tmp_path: Path, name: str) -> None:
    target = stamped(build_models, tmp_path, name, build_models.fingerprint(name))

    assert build_models.up_to_date(name, target)


def test_a_pt2_is_rebuilt_when_its_stamp_differs_or_a_companion_is_gone(build_models: Any, tmp_path: Path) -> None:
    stale = stamped(build_models, tmp_path / "a", "aoti_example", "0" * 64)
    current = stamped(build_models, tmp_path / "b", "aoti_example", build_models.fingerprint("aoti_example"))
    shutil.rmtree(tmp_path / "b" / "aoti_example_ordinal")

    assert not build_models.up_to_date("aoti_example", stale)
    assert not build_models.up_to_date("aoti_example", current)
    assert not build_models.up_to_date("cifar10", stamped(build_models, tmp_path / "c", "cifar10", "x"))  # not cached


def test_the_fingerprint_follows_the_torch_version(build_models: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = build_models.fingerprint("cifar10_pt2")
    monkeypatch.setattr(build_models.torch, "__version__", "0.0.0")

    assert build_models.fingerprint("cifar10_pt2") != before
