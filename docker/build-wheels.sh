#!/bin/sh
# Builds the wheels that go into the kxform image: kxform itself and the plugin packages under
# transformers/. The Dockerfile's builder stage runs this script and so does tests/deploy, so the
# image and the test install the same wheels.
#
# Usage: build-wheels.sh SOURCE_DIR WHEEL_DIR [PLUGINS]
#   SOURCE_DIR  a kxform checkout (pyproject.toml at its root, plugin packages in transformers/<name>/)
#   WHEEL_DIR   where the wheels are written
#   PLUGINS     "all" (default): every transformers/<name>/ that has a pyproject.toml;
#               "none": kxform alone; or names, e.g. "cifar10 digits"
# Environment: PYTHON, the interpreter whose pip builds the wheels (default: python).
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 SOURCE_DIR WHEEL_DIR [all|none|NAME...]" >&2
    exit 2
fi
src=$1
out=$2
plugins=${3:-all}
python=${PYTHON:-python}

set -- "$src"
case "$plugins" in
    all)
        for project in "$src"/transformers/*/pyproject.toml; do
            if [ -f "$project" ]; then
                set -- "$@" "$(dirname "$project")"
            fi
        done
        ;;
    none) ;;
    *)
        for name in $plugins; do
            if [ ! -f "$src/transformers/$name/pyproject.toml" ]; then
                echo "build-wheels: no plugin package transformers/$name/ (PLUGINS=\"$plugins\");" \
                    "choose from: $(ls "$src/transformers" 2>/dev/null | tr '\n' ' ')" >&2
                exit 1
            fi
            set -- "$@" "$src/transformers/$name"
        done
        ;;
esac

echo "build-wheels: $*"
# --no-deps: dependencies are resolved once, at install time, against kxform's pinned constraints.
"$python" -m pip wheel --no-deps --wheel-dir "$out" "$@"
