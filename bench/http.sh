#!/usr/bin/env bash
# HTTP load benchmark: peregrine_rt vs uvicorn (httptools+uvloop), hypercorn (trio), raw trio.
# The work is in http_load.py (a file named http.py would shadow the standard library's
# http module for every script in this folder).  Arguments pass through: --quick, --repeat N...
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/http_load.py "$@"
