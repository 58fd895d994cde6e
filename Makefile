# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest sanitize docs docs-gen bench-parser bench-http bench-chat bench-fanout docs-config clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml setup.py peregrine_rt/_http/_speedups.c peregrine_rt/_ws_speedups.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# The chat example on http://127.0.0.1:8000 with the in-memory hub (add
# --redis URL, or set REDIS_URL, to share it between processes).  Ctrl-C stops
# it gracefully.
run: $(STAMP)
	$(BIN)/peregrine-rt examples.chat.app:Chat --host 127.0.0.1 --port 8000 --access-log

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite under coverage: branch coverage of peregrine_rt, the processes the
# tests start (CLI, workers, example servers) included, combined and reported
# ([tool.coverage.*] in pyproject.toml).  The target fails with pytest's status
# when a test fails (5: none collected), else with the report's when the total
# is under fail_under.  For a subset, run .venv/bin/pytest directly.
pytest: $(STAMP)
	rm -f .coverage .coverage.*
	status=0; $(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS) || status=$$?; \
	report=0; { $(BIN)/python -m coverage combine --quiet && \
	    $(BIN)/python -m coverage report; } || report=$$?; \
	if [ $$status -ne 0 ]; then exit $$status; fi; exit $$report

test: lint typecheck docs pytest

# The C accelerator built with AddressSanitizer and UndefinedBehaviorSanitizer
# in a scratch directory (the normal build is untouched), and the tests that
# compare it with the pure-Python parser run against it with more Hypothesis
# examples (SANITIZE_EXAMPLES, tests/sanitize/hypothesis_profile.py).  Needs gcc;
# a few minutes.
sanitize: $(STAMP)
	SANITIZE_PYTHON=$(BIN)/python tests/sanitize/run.sh $(PYTEST_ARGS)

bench-parser: $(STAMP)
	$(BIN)/python bench/parser.py

bench-http: $(STAMP)
	bench/http.sh

# The chat scenario: K clients in one room, each sending at a steady rate
# (bench/chat.py --help for the options).
bench-chat: $(STAMP)
	$(BIN)/python bench/chat.py

bench-fanout: $(STAMP)
	$(BIN)/python bench/fanout.py

# The documentation, as CI builds it: generated pages current, HTML with
# warnings as errors and every cross-reference resolved (-n), the pages'
# doctests run, then every relative link and #anchor of the built site checked
# (linkcheck would need the internet).
SPHINX := $(BIN)/sphinx-build -W --keep-going -n -q -d docs/_build/doctrees
DOCS_TOOLS := $(wildcard docs/_tools/gen_*.py)

docs: $(STAMP)
	for tool in $(DOCS_TOOLS); do $(BIN)/python $$tool --check || exit 1; done
	$(SPHINX) -b html docs docs/_build/html
	$(SPHINX) -b doctest docs docs/_build/doctest
	$(BIN)/python docs/_tools/check_links.py docs/_build/html

# Rewrite the generated pages (configuration, CLI, benchmark chart).
docs-gen: $(STAMP)
	for tool in $(DOCS_TOOLS); do $(BIN)/python $$tool || exit 1; done

docs-config: docs-gen

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis docs/_build .coverage .coverage.*
