"""Build the optional C accelerator of the request parser; pyproject.toml holds the metadata.

``optional=True``: where no C compiler (or no Python headers) is at hand, the
build of the extension fails, setuptools says so and goes on, and
peregrine_rt installs as pure Python (same behaviour, a slower parser fast
path).  See ``peregrine_rt/_http/_speedups.c``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "peregrine_rt._http._speedups",
            ["peregrine_rt/_http/_speedups.c"],
            optional=True,
        )
    ]
)
