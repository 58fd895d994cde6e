"""Build the optional C accelerators; pyproject.toml holds the metadata.

Two extensions, both ``optional=True``: where no C compiler (or no Python
headers) is at hand, a failed build is reported and skipped, and
peregrine_rt installs as pure Python (same behaviour, slower fast paths).

* ``peregrine_rt._http._speedups``: the request parser's and response
  writer's fast paths (``peregrine_rt/_http/_speedups.c``);
* ``peregrine_rt._ws_speedups``: the WebSocket fast path's frame reader
  (``peregrine_rt/_ws_speedups.c``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "peregrine_rt._http._speedups",
            ["peregrine_rt/_http/_speedups.c"],
            optional=True,
        ),
        Extension(
            "peregrine_rt._ws_speedups",
            ["peregrine_rt/_ws_speedups.c"],
            optional=True,
        ),
    ]
)
