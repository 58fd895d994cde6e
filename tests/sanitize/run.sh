#!/usr/bin/env bash
# `make sanitize`: the C accelerator (peregrine_rt/_http/_speedups.c) built with
# AddressSanitizer and UndefinedBehaviorSanitizer, then the tests that drive it
# against the pure-Python reading run on that build, the direct comparison of
# the two scanners with more Hypothesis examples than CI gives it.  Any
# sanitizer report aborts the run (non-zero exit).
#
# The normal in-place build (the .so next to _speedups.c) is left alone: the
# sanitized one goes into a copy of the package and tests in a scratch
# directory, and pytest runs from there, so `import peregrine_rt` finds the
# copy first (cwd and PYTHONPATH come before the editable install's finder).
#
# Environment:
#   SANITIZE_PYTHON    interpreter with the test dependencies (default .venv/bin/python)
#   CC                 compiler (default gcc)
#   SANITIZE_EXAMPLES  Hypothesis examples per property (default 1000; the
#                      differential tests get a fifth: hypothesis_profile.py)
#   SANITIZE_SOURCE    the C file to build (default the package's own; for
#                      checking that a planted bug is caught)
#   SANITIZE_KEEP=1    keep the scratch directory (its path is printed)
# Extra arguments go to both pytest runs (e.g. -x, -v).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${SANITIZE_PYTHON:-.venv/bin/python}
[[ $PYTHON == /* ]] || PYTHON=$ROOT/$PYTHON  # the tests run from elsewhere
CC=${CC:-gcc}
SOURCE=${SANITIZE_SOURCE:-$ROOT/peregrine_rt/_http/_speedups.c}
PYTEST_EXTRA=("$@")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/peregrine-sanitize.XXXXXX")
if [[ ${SANITIZE_KEEP:-} == 1 ]]; then
    echo "sanitize: scratch directory $WORK (kept)"
else
    trap 'rm -rf "$WORK"' EXIT
fi

# The package (with any in-place build of the extension removed) and the
# tests, plus pyproject.toml for pytest's configuration.
cp -r peregrine_rt tests pyproject.toml "$WORK"/
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$WORK"/peregrine_rt/_http/_speedups*.so

INCLUDE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SUFFIX=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
TARGET=$WORK/peregrine_rt/_http/_speedups$SUFFIX
# -O1 keeps the build fast to test while leaving ASan's checks in place;
# no -DNDEBUG, so the C code's own assertions are on too.
"$CC" -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -Wall -Wextra \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I"$INCLUDE" "$SOURCE" -o "$TARGET"
echo "sanitize: built $TARGET with -fsanitize=address,undefined"

# The interpreter is not built with ASan, so its runtime must be loaded
# first.  CPython keeps objects alive until exit by design: no leak report.
# PYTHONMALLOC=malloc gives every object its own malloc block, so ASan's red
# zones sit right after each bytes object instead of inside a pymalloc arena.
LIBASAN=$("$CC" -print-file-name=libasan.so)
export LD_PRELOAD=$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
export PYTHONMALLOC=malloc
export PYTHONPATH=$WORK:$ROOT/tests/sanitize
unset PEREGRINE_RT_NO_SPEEDUPS
cd "$WORK"

# Refuse to go on unless the sanitized build is the one the tests will use.
"$PYTHON" - "$TARGET" <<'EOF'
import sys
from pathlib import Path

from peregrine_rt._http import _parser, _speedups

expected = Path(sys.argv[1]).resolve()
found = Path(_speedups.__file__).resolve()
if found != expected:
    sys.exit(f"sanitize: imported {found}, not the sanitized build {expected}")
if not _parser.SPEEDUPS:
    sys.exit("sanitize: the parser does not use the sanitized build (interface mismatch?)")
print(f"sanitize: tests import {found}")
EOF

# The scanner compared with Python directly and every parser case on the C
# fast path, then the whole parser (C and Python) against h11 and fast path
# against general path, with fewer examples (hypothesis_profile.py says why).
# --capture=sys: a sanitizer writes its report to file descriptor 2 and ends
# the process, so pytest must not be holding that descriptor in a capture file.
# Add -v to see which test was running when a report ends the run.
run_pytest() {
    "$PYTHON" -m pytest -p no:cacheprovider -p hypothesis_profile --capture=sys -q "$@"
}
run_pytest --hypothesis-profile=sanitize \
    tests/unit/test_speedups.py tests/unit/test_http_parser.py "${PYTEST_EXTRA[@]}"
run_pytest --hypothesis-profile=sanitize-differential tests/differential "${PYTEST_EXTRA[@]}"
echo "sanitize: no AddressSanitizer or UndefinedBehaviorSanitizer report"
