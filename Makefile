# One place for the commands README and CI use. `make serve` and `make test` set
# everything up on a fresh machine (Python 3.11+) and then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp
ARGS ?=

.PHONY: setup setup-dev serve test lint eval-pii bench bench-audit bench-telemetry bench-policy bench-pii bench-toxicity clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

# The test suite also runs the transformers NER backend on a tiny model built in a
# temp dir: torch goes in first, by itself, so pip takes the build it is given.
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(DEV_STAMP)

setup: $(STAMP)

setup-dev: $(DEV_STAMP)

serve: setup
	$(BIN)/guard db upgrade
	$(BIN)/guard serve $(ARGS)

lint: setup-dev
	$(BIN)/ruff check guard tests bench migrations
	$(BIN)/ruff format --check guard tests bench migrations
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(ARGS)

bench: setup-dev
	$(BIN)/python -m bench.proxy_overhead $(ARGS)

bench-audit: setup-dev
	$(BIN)/python -m bench.audit $(ARGS)

bench-telemetry: setup-dev
	$(BIN)/python -m bench.telemetry $(ARGS)

bench-policy: setup-dev
	$(BIN)/python -m bench.policy $(ARGS)

bench-pii: setup-dev
	$(BIN)/python -m bench.pii $(ARGS)

bench-toxicity: setup-dev
	$(BIN)/python -m bench.toxicity $(ARGS)

eval-pii: setup-dev
	$(BIN)/python -m tests.evals.pii $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
