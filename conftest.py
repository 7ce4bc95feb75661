"""What kxform's own tests need beyond kxform's pytest plugin: the test plugin packages of tests/plugins.

Those packages (one of them broken on purpose) are found through real entry points, yet they must not be
installed in the dev venv, where `kxform plugins` would list them next to the examples. So they are installed
for the test session alone: each package's dist-info (its METADATA and entry_points.txt, generated from its own
pyproject.toml) is written into a fresh directory that goes on ``sys.path`` with the package's ``src/``, and on
``PYTHONPATH``, so the ``kxform serve`` processes the tests start find them too. Nothing outside the session
sees them, a change to a pyproject.toml takes effect in the next run, and no pip step is needed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

# kxform's pytest plugin also loads through its pytest11 entry point; under the same name this is not a second
# registration, and it keeps these tests working in a venv whose kxform was installed before the entry point existed.
pytest_plugins = ["kxform.pytest_plugin"]

TEST_PLUGINS = Path(__file__).resolve().parent / "tests" / "plugins"


def _dist_info(project: dict[str, object], site: Path) -> None:
    """``NAME-VERSION.dist-info`` of one test package: what importlib.metadata reads for its entry points."""
    name, version = str(project["name"]), str(project["version"])
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = project.get("entry-points", {})
    assert isinstance(groups, dict)
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{entry} = {target}" for entry, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def _install_test_plugins() -> None:
    site = Path(tempfile.mkdtemp(prefix="kxform-test-plugins-"))
    atexit.register(shutil.rmtree, site, True)
    paths = [str(site)]
    for pyproject in sorted(TEST_PLUGINS.glob("*/pyproject.toml")):
        _dist_info(tomllib.loads(pyproject.read_text())["project"], site)
        paths.append(str(pyproject.parent / "src"))
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])


_install_test_plugins()
