# The README's two commands are `make dev` and `make test`; both set up what they need first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kxform-setup
PLUGINS := $(sort $(dir $(wildcard transformers/*/pyproject.toml)))
MODELS_STAMP := models/.built
LINT_PATHS := src tests tools conftest.py $(wildcard transformers benchmarks)

CHECKOV_VENV := build/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.kxform-setup

.PHONY: setup models dev test lint typecheck bench soak lock checkov checkov-lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt $(wildcard transformers/*/pyproject.toml tests/plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==$(shell sed -n 's/^pip==//p' requirements/constraints.txt)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev,torchserve]' \
		$(foreach p,$(PLUGINS) $(sort $(dir $(wildcard tests/plugins/*/pyproject.toml))),-e $(p))
	touch $@

models: $(MODELS_STAMP)

$(MODELS_STAMP): tools/build_models.py | $(STAMP)
	$(BIN)/python tools/build_models.py --out models
	touch $@

dev: setup models
	$(BIN)/kxform dev --model-repository models

# The playground's browser test drives Debian's headless Chromium (installed here if missing: the CI machine
# runs as root; Playwright's own browser download would need its CDN).
test: setup models lint typecheck checkov
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: setup
	$(BIN)/mypy

# Triton, kxform and the seeds' reference transformer under the same wrk load; prints the table and
# writes benchmarks/results/latest.json, benchmarks/RESULTS.md and its chart RESULTS.png. wrk comes from Debian's packages
# (installed here if missing: the dev machine runs as root). BENCH_ARGS=--help lists the options.
bench: setup models
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Triton and `kxform serve --transformer cifar10 --transformer text` under 2 minutes of 32 connections
# of valid and invalid requests; fails on a 5xx, a dropped connection, an unexpected status or RSS
# growth of 10 % or more.
# Writes benchmarks/results/soak.json. SOAK_ARGS=--help lists the options (--seconds, --connections).
soak: setup models
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# checkov (the policy scanner tests/deploy/test_checkov.py runs over deploy/ and docker/) in a venv of
# its own: its pins (tabulate<0.10, among others) conflict with requirements/constraints.txt.
checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): requirements/checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements/checkov.txt
	touch $@

# Re-resolve checkov's pins (the version stays the one in requirements/checkov.txt).
checkov-lock:
	rm -rf build/checkov-lock && $(PYTHON) -m venv build/checkov-lock
	build/checkov-lock/bin/pip install --quiet "$$(grep '^checkov==' requirements/checkov.txt)"
	{ sed -n '1,2p' requirements/checkov.txt; \
	  build/checkov-lock/bin/pip freeze --all | grep -v -E '^(setuptools|wheel)==' | sort -f; } > requirements/checkov.txt.new
	mv requirements/checkov.txt.new requirements/checkov.txt

# Re-resolve the pinned versions from pyproject.toml in a scratch venv.
lock:
	rm -rf build/lock && $(PYTHON) -m venv build/lock
	build/lock/bin/pip install --quiet --upgrade pip
	build/lock/bin/pip install --quiet '.[dev,torchserve]'
	{ echo "# Pinned versions for development, tests and CI (pip install -c). Regenerate: make lock"; \
	  build/lock/bin/pip freeze --all | grep -v -E '^(-e|kxform|setuptools|wheel)' | sort -f; } > requirements/constraints.txt

clean:
	rm -rf $(VENV) models build
