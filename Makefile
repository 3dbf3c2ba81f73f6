# Two entry points, each doing its own set-up (a virtual environment in .venv):
#   make run    the whole DAG (`kedro run`) on the bundled synthetic demo data
#   make test   the test suite
# Extra arguments for kedro: make run ARGS="--params=trick:baseline"

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1

.PHONY: run test install

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/kedro run $(ARGS)

test: $(BIN)/.installed
	$(BIN)/ruff check src scripts tests
	$(BIN)/python -m pytest $(ARGS)
