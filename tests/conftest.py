"""Test-wide configuration: the Hypothesis profiles.

Pick one with ``HYPOTHESIS_PROFILE`` (``.ci/run`` sets ``ci``):

* ``default``: quick local runs, about 200 examples per property;
* ``ci``: a few thousand cases over the differential suite, still well under
  a minute on a slow two-core machine; prints the blob that reproduces a
  failure, since CI keeps no example database;
* ``long``: a thorough local search (20,000 examples per property).

Deadlines are off everywhere: timing on shared machines is noise, and a slow
example is a performance question, not a correctness one.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile("ci", max_examples=600, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
