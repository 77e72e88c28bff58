# nurture: `make run` serves on SQLite with the default pack; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install nurture with its dev tools

run: $(STAMP) ## Migrate a SQLite file and start `nurture up` (API + worker) on 127.0.0.1:8000
	$(BIN)/nurture migrate
	exec $(BIN)/nurture up --no-migrate

test: $(STAMP) ## Run the whole test suite (PostgreSQL tests need NURTURE_TEST_DATABASE_URL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the suite without the slow system tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## Lint with ruff (and check formatting) and check the import layers
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports --no-cache

fmt: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

type: $(STAMP) ## Type-check src/ with mypy --strict
	$(BIN)/mypy

BENCHES ?= ingest sources scheduler rules sequences delivery rfm

bench: $(STAMP) ## Run every benchmark (tables; BENCHES="ingest rfm" for some; PostgreSQL via NURTURE_BENCH_PG_URL)
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py; done

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install run test test-fast lint fmt type bench clean
