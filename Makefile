# Every target installs what it needs first, and does nothing it has already done.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck bench demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest

bench: setup
	$(BIN)/gelu-rollout bench decisions --json bench-decisions.json

# Replays one generated rollout through the decision core: SCENARIO=healthy,
# or a fault kind such as nan-burst, errors-10x, latency-p99-50, drift-kl-0.05.
SCENARIO ?= healthy
demo: setup
	COLUMNS=$${COLUMNS:-160} $(BIN)/gelu-rollout demo --scenario $(SCENARIO)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench-decisions.json
