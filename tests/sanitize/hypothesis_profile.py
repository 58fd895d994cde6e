"""Hypothesis profiles for ``tests/sanitize/run.sh`` (loaded with ``-p``; not a test module).

A sanitized build turns a silent out-of-bounds read into a crash only when an
example reaches it, so the direct comparisons of the two scanners and of the
two frame readers get many more examples than CI gives them.  One knob,
``SANITIZE_EXAMPLES`` (default 1000), sets both profiles:

* ``sanitize``: that many examples per property for ``test_speedups.py``,
  ``test_http_parser.py``, ``test_ws_speedups.py`` and ``test_frames.py``
  (``test_same_answer_as_python`` and ``test_random_bytes`` run five times as
  many, 5,000 by default against CI's 3,000);
* ``sanitize-differential``: a fifth of it for the differential tests, which
  run the whole parser (and h11) per example and mostly exercise Python.

Under ASan with ``PYTHONMALLOC=malloc`` an example costs about twice what it
does normally; the defaults keep ``make sanitize`` to a few minutes.
"""

from __future__ import annotations

import os

from hypothesis import settings

_EXAMPLES = int(os.environ.get("SANITIZE_EXAMPLES", "1000"))

# Deadlines are off: a sanitized, unoptimised build is slow, timing means nothing here.
settings.register_profile("sanitize", max_examples=_EXAMPLES, deadline=None, print_blob=True)
settings.register_profile(
    "sanitize-differential", max_examples=max(1, _EXAMPLES // 5), deadline=None, print_blob=True
)
