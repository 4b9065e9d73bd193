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

# The local sandbox lands with the operator; until then the demo replays the
# decision benchmark's scenarios through the rollout state machine.
demo: setup
	$(BIN)/gelu-rollout demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench-decisions.json
