# Every target installs what it needs first, and does nothing it has already done.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint typecheck contracts bench bench-variants demo clean

# Debian packages, the virtual environment, the Triton server files, the packages: each once,
# a line per stage, the tools' output in build/setup.log (scripts/setup.sh).
setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh

lint: setup
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests

typecheck: setup
	$(BIN)/mypy

# The import contracts in pyproject.toml: the layers, and the operator apart from the lab.
contracts: setup
	$(BIN)/lint-imports --no-cache

# Two workers (pytest-xdist), a whole test file each at a time: the end-to-end files spend most
# of their time waiting for their rollouts' steps, so two of them share the two cores. In the
# order collected (tests/conftest.py puts the longest files first), not xdist's largest first.
PYTEST_WORKERS ?= 2
test: setup lint typecheck contracts
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: setup
	$(BIN)/gelu-rollout bench decisions --json bench-decisions.json

bench-variants: setup
	$(BIN)/gelu-rollout bench variants --json bench-variants.json

# Runs one rollout end to end on the local sandbox (API emulator, Triton pods, Prometheus,
# the operator): SCENARIO=healthy, nan, latency, errors or drift. A command without shell
# syntax, so make runs it itself and passes a SIGTERM on to it.
SCENARIO ?= healthy
demo: setup
	$(BIN)/gelu-rollout demo --scenario $(SCENARIO)

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache bench-decisions.json bench-variants.json
