"""The plugin registry, against the real entry points of the test plugin packages (tests/plugins/)."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from kxform.errors import PluginError
from kxform.plugins import discover, load_plugin


def test_discover_lists_name_distribution_and_version_without_importing() -> None:
    import sys

    plugins = discover()

    (info,) = plugins["test-cifar10"]
    assert (info.distribution, info.version) == ("kxform-test-plugins", "0.0.1")
    assert info.target == "kxform_test_plugins.plugins:Cifar10Images"
    assert "kxform_test_plugins.broken" not in sys.modules  # listing imports nothing


def test_load_plugin_validates_and_names_the_instance() -> None:
    plugin = load_plugin("test-tensor")

    assert plugin.transformer.name == "test-tensor"
    assert plugin.predictor_model == "cifar10"
    assert inspect.iscoroutinefunction(plugin.preprocess)  # sync hooks are wrapped once, at load


def test_sync_hooks_run_inline_unless_the_plugin_offloads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from kxform_test_plugins.plugins import NestedListTensor

    seen: list[str] = []
    monkeypatch.setattr(
        NestedListTensor, "preprocess", lambda self, instances, ctx: seen.append(threading.current_thread().name)
    )

    async def run(offload: bool) -> None:
        monkeypatch.setattr(NestedListTensor, "offload_hooks", offload)
        await load_plugin("test-tensor").preprocess([], None)

    asyncio.run(run(False))
    asyncio.run(run(True))

    assert seen[0] == threading.main_thread().name
    assert seen[1] != threading.main_thread().name


def test_load_plugin_keeps_async_hooks_as_they_are() -> None:
    plugin = load_plugin("test-async")

    assert plugin.preprocess == plugin.transformer.preprocess
    result = asyncio.run(plugin.preprocess([[1.0]], None))
    assert list(result) == [0]


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        pytest.param(
            "test-broken-import",
            [
                "'test-broken-import = kxform_test_plugins.broken:Plugin'",
                "kxform-test-plugins 0.0.1",
                "failed to import",
                "ModuleNotFoundError",
                "kxform_missing_dependency",
            ],
            id="import-fails",
        ),
        pytest.param(
            "test-duplicate",
            ["registered by more than one distribution", "kxform-test-plugins 0.0.1", "kxform-test-duplicate 0.0.2"],
            id="two-distributions",
        ),
        pytest.param("no-such-plugin", ["no transformer plugin named 'no-such-plugin'", "test-cifar10"], id="missing"),
        pytest.param("test-not-a-transformer", ["must name a subclass of kxform.Transformer"], id="not-a-class"),
        pytest.param(
            "test-bad-datatype",
            ["'test-bad-datatype = kxform_test_plugins.bad_datatype:Plugin'", "'FP33' is not a V2 datatype", "FP32"],
            id="bad-datatype",
        ),
    ],
)
def test_load_plugin_errors_name_the_entry_point_distribution_and_cause(name: str, fragments: list[str]) -> None:
    with pytest.raises(PluginError) as caught:
        load_plugin(name)

    for fragment in fragments:
        assert fragment in caught.value.message
