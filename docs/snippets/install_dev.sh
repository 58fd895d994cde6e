make test        # creates .venv (pip install -e '.[dev,bench]'), then lint, types, docs, tests
make docs        # the documentation alone: docs/_build/html/index.html
make run         # serve the most complete example on 127.0.0.1:8000
