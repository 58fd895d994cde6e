# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench-parser bench-http docs-config clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# The most complete example so far: the echo app (the chat example replaces it
# once it lands).  Ctrl-C stops it gracefully.
run: $(STAMP)
	$(BIN)/peregrine-rt examples.echo:Echo --host 127.0.0.1 --port 8000 --access-log

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench-parser: $(STAMP)
	$(BIN)/python bench/parser.py

bench-http: $(STAMP)
	bench/http.sh

docs-config: $(STAMP)
	$(BIN)/python docs/_tools/gen_config.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
