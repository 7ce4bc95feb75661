#!/bin/sh
# Installs kxform and plugin wheels into the Python environment that serves them, with the versions
# pinned in kxform's requirements/constraints.txt, then proves the result: dependencies consistent,
# no torch anywhere, `kxform serve --help` runs. The Dockerfile runs this script (and so does a
# user's plugin image, docker/plugin.Dockerfile); tests/deploy replays it in a fresh venv.
#
# Usage: install-wheels.sh WHEEL_DIR [CONSTRAINTS]
#   WHEEL_DIR    directory of .whl files to install (all of them)
#   CONSTRAINTS  pip constraints file (default: /opt/kxform/constraints.txt, where the image keeps it)
# Environment: PYTHON, the interpreter of the target environment (default: python).
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: $0 WHEEL_DIR [CONSTRAINTS]" >&2
    exit 2
fi
wheels=$1
constraints=${2:-/opt/kxform/constraints.txt}
python=${PYTHON:-python}

set -- "$wheels"/*.whl
if [ ! -f "$1" ]; then
    echo "install-wheels: no .whl files in $wheels" >&2
    exit 1
fi

# The same pip as development and CI, so resolution gives the same versions.
"$python" -m pip install --constraint "$constraints" --upgrade pip
"$python" -m pip install --constraint "$constraints" "$@"
"$python" -m pip check

"$python" - <<'PY'
import importlib.util
import sys
from importlib.metadata import entry_points

# A plugin that depends on torch would drag gigabytes into the transformer image; the transformer
# only decodes and reshapes tensors, Triton runs the model.
if importlib.util.find_spec("torch") is not None:
    sys.exit(
        "install-wheels: torch got installed; the transformer image must not contain torch. "
        "Find the package that requires it with `pip show torch` (Required-by) and drop torch "
        "from its dependencies."
    )
plugins = sorted(f"{ep.name} ({ep.value})" for ep in entry_points(group="kxform.transformers"))
print("install-wheels: kxform plugins:", ", ".join(plugins) or "(none)")
PY

"$python" -m kxform serve --help > /dev/null
echo "install-wheels: kxform serve --help runs"
