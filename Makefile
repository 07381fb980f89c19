# One place for the commands README and CI use. `make serve` and `make test` set
# everything up on a fresh machine (Python 3.11+) and then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: setup serve test lint bench bench-audit bench-telemetry bench-policy clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(BIN)/guard db upgrade
	$(BIN)/guard serve $(ARGS)

lint: setup
	$(BIN)/ruff check guard tests bench migrations
	$(BIN)/ruff format --check guard tests bench migrations
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(ARGS)

bench: setup
	$(BIN)/python -m bench.proxy_overhead $(ARGS)

bench-audit: setup
	$(BIN)/python -m bench.audit $(ARGS)

bench-telemetry: setup
	$(BIN)/python -m bench.telemetry $(ARGS)

bench-policy: setup
	$(BIN)/python -m bench.policy $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
