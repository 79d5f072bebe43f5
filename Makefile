# The one entry point. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
export SAM_CLI_TELEMETRY := 0
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-unit test-integration test-e2e local lint format validate build deploy bench clean

$(STAMP): requirements-dev.txt layers/common/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## full sync of the demo district on the embedded stack
	$(BIN)/rostersync demo $(if $(SOURCE),--source $(SOURCE)) $(if $(VERSION),--version $(VERSION))

test: $(STAMP)  ## the whole suite: unit, integration (moto server) and e2e (embedded stack over HTTP)
	$(BIN)/pytest -n auto --dist loadfile $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

bench: $(STAMP)  ## S and M districts through the real pipeline (BENCH_SIZES=S,M,XL adds XL); docs/benchmarks.md
	$(BIN)/rostersync bench

local: $(STAMP)  ## the embedded stack in the foreground (API :3000, AWS emulator :5000)
	$(BIN)/rostersync local up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

validate: $(STAMP)
	AWS_DEFAULT_REGION=us-east-1 $(BIN)/sam validate --lint

build: $(STAMP)
	$(BIN)/sam build

deploy: build
	$(BIN)/sam deploy --guided

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
