"""``python -m peregrine_rt MODULE:ATTR [options]``: the same as ``peregrine-rt``."""

import sys

from ._cli import main

sys.exit(main())
