# One entry point. `make run` sets up everything and starts the suite; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= gateway,recommender,worker,embedded,train,dev
STAMP := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')
export ATELIER_MODELS_DIR ?= $(CURDIR)/var/models

.PHONY: install run models models-serving test test-fast lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# cairosvg (rendering the OpenMoji icons the default GAN trains on) needs the system libcairo;
# the console's browser tests need chromium.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# The Python client (its own distribution); the atelier CLI's API commands use it.
	$(BIN)/python -m pip install -q -e ./clients/python
	@$(BIN)/python -c "import cairosvg" 2>/dev/null || { \
	  echo "installing libcairo2 (system library cairosvg needs)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q libcairo2; }
	# The console's browser tests (tests/e2e/test_console.py) drive Debian's chromium.
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing chromium (the console's browser tests)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }
	touch $@

install: $(STAMP)

## Build every bundled model into var/models (skips what is up to date).
models: install
	$(BIN)/python -m workers.training.build

## The models the tagging tests need (fast to build).
models-serving: install
	$(BIN)/python -m workers.training.build --only image_tagger --only text_embedder

## Set up and run the whole suite (gateway :8000, recommender :8001, workers, beat).
run: install
	$(BIN)/atelier run

## Install what the tests need, build the serving models, run every test.
test: models-serving
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration and not e2e"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

## mypy as configured in pyproject.toml ([tool.mypy]: strict on shared, ranking and workers).
typecheck: install
	$(BIN)/mypy

bench: models
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
