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

# One line per step, then pip's own progress (what it downloads and installs): the first run takes a few minutes.
# The test plugin packages in tests/plugins (one broken on purpose) are not installed here: conftest.py makes them
# visible to the test session alone (their dist-info on sys.path and PYTHONPATH), so `kxform plugins` in this venv
# lists the example plugins only. A venv made before that had them installed loses them here.
STEP = @printf '\n==> make setup (%s/4): %s\n' $(1) $(2)
TEST_PLUGIN_DISTS := kxform-test-plugins kxform-test-duplicate

$(STAMP): pyproject.toml requirements/constraints.txt $(wildcard transformers/*/pyproject.toml)
	$(call STEP,1,"create $(VENV) with $(PYTHON)")
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call STEP,2,"pip $(shell sed -n 's/^pip==//p' requirements/constraints.txt)")
	$(BIN)/python -m pip install --upgrade pip==$(shell sed -n 's/^pip==//p' requirements/constraints.txt)
	$(call STEP,3,"kxform with its development tools and the torchserve extra (torch and the Triton server among them; versions from requirements/constraints.txt) and the example plugins $(notdir $(PLUGINS:/=))")
	$(BIN)/python -m pip install -c requirements/constraints.txt -e '.[dev,torchserve]' $(foreach p,$(PLUGINS),-e $(p))
	$(call STEP,4,"remove test-only plugin packages a previous setup installed")
	$(BIN)/python -m pip uninstall --yes $(TEST_PLUGIN_DISTS) 2>/dev/null | grep -v '^WARNING: Skipping' || true
	@echo "make setup: done; $(BIN)/kxform plugins lists what is installed"
	touch $@

models: $(MODELS_STAMP)

$(MODELS_STAMP): tools/build_models.py | $(STAMP)
	@printf '\n==> make models: the example model repository in models/ (TorchScript, digits trained here)\n'
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
