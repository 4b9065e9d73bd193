# Every target installs what it needs first, and does nothing it has already done.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages: Prometheus (and promtool) for the sandbox, and numpy for the system Python
# that runs Triton's Python-backend models.
SYSTEM_PACKAGES := prometheus python3-numpy

.PHONY: setup system-packages test lint typecheck contracts bench bench-variants demo clean

setup: system-packages $(STAMP)

system-packages:
	@dpkg-query -W -f='$${Status}\n' $(SYSTEM_PACKAGES) 2>/dev/null | grep -c '^install ok installed' \
	  | grep -qx "$(words $(SYSTEM_PACKAGES))" || { \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "missing Debian packages; run: sudo apt-get install -y $(SYSTEM_PACKAGES)" >&2; exit 1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(SYSTEM_PACKAGES); }

$(STAMP): pyproject.toml operator/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./operator
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests

typecheck: setup
	$(BIN)/mypy

# The import contracts in pyproject.toml: the layers, and the operator apart from the lab.
contracts: setup
	$(BIN)/lint-imports --no-cache

test: setup lint typecheck contracts
	$(BIN)/pytest

bench: setup
	$(BIN)/gelu-rollout bench decisions --json bench-decisions.json

bench-variants: setup
	$(BIN)/gelu-rollout bench variants --json bench-variants.json

# Runs one rollout end to end on the local sandbox (API emulator, Triton pods, Prometheus,
# the operator): SCENARIO=healthy, nan, latency, errors or drift.
SCENARIO ?= healthy
demo: setup
	COLUMNS=$${COLUMNS:-160} $(BIN)/gelu-rollout demo --scenario $(SCENARIO)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench-decisions.json bench-variants.json
