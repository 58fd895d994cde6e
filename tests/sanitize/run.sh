#!/usr/bin/env bash
# `make sanitize`: the C accelerators (peregrine_rt/_http/_speedups.c, the
# parser's, and peregrine_rt/_ws_speedups.c, the WebSocket frame reader's)
# built with AddressSanitizer and UndefinedBehaviorSanitizer, then the tests
# that drive them against the pure-Python readings run on that build, the
# direct comparisons (scanner against scanner, frame reader against frame
# reader) with more Hypothesis examples than CI gives them.  Any sanitizer
# report aborts the run (non-zero exit).
#
# The normal in-place builds (the .so next to each .c) are left alone: the
# sanitized ones go into a copy of the package and tests in a scratch
# directory, and pytest runs from there, so `import peregrine_rt` finds the
# copy first (cwd and PYTHONPATH come before the editable install's finder).
#
# Environment:
#   SANITIZE_PYTHON    interpreter with the test dependencies (default .venv/bin/python)
#   CC                 compiler (default gcc)
#   SANITIZE_EXAMPLES  Hypothesis examples per property (default 1000; the
#                      differential tests get a fifth: hypothesis_profile.py)
#   SANITIZE_SOURCE    the parser's C file to build (default the package's own;
#                      for checking that a planted bug is caught)
#   SANITIZE_WS_SOURCE the same for the frame reader (_ws_speedups.c)
#   SANITIZE_KEEP=1    keep the scratch directory (its path is printed)
# Extra arguments go to both pytest runs (e.g. -x, -v).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${SANITIZE_PYTHON:-.venv/bin/python}
[[ $PYTHON == /* ]] || PYTHON=$ROOT/$PYTHON  # the tests run from elsewhere
CC=${CC:-gcc}
SOURCE=${SANITIZE_SOURCE:-$ROOT/peregrine_rt/_http/_speedups.c}
WS_SOURCE=${SANITIZE_WS_SOURCE:-$ROOT/peregrine_rt/_ws_speedups.c}
PYTEST_EXTRA=("$@")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/peregrine-sanitize.XXXXXX")
if [[ ${SANITIZE_KEEP:-} == 1 ]]; then
    echo "sanitize: scratch directory $WORK (kept)"
else
    trap 'rm -rf "$WORK"' EXIT
fi

# The package (with any in-place build of the extensions removed) and the
# tests, plus pyproject.toml for pytest's configuration.
cp -r peregrine_rt tests pyproject.toml "$WORK"/
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$WORK"/peregrine_rt/_http/_speedups*.so "$WORK"/peregrine_rt/_ws_speedups*.so

INCLUDE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SUFFIX=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
TARGET=$WORK/peregrine_rt/_http/_speedups$SUFFIX
WS_TARGET=$WORK/peregrine_rt/_ws_speedups$SUFFIX
# -O1 keeps the build fast to test while leaving ASan's checks in place;
# no -DNDEBUG, so the C code's own assertions are on too.
build() {
    "$CC" -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -Wall -Wextra \
        -fsanitize=address,undefined -fno-sanitize-recover=undefined \
        -I"$INCLUDE" "$1" -o "$2"
    echo "sanitize: built $2 with -fsanitize=address,undefined"
}
build "$SOURCE" "$TARGET"
build "$WS_SOURCE" "$WS_TARGET"

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

# Refuse to go on unless the sanitized builds are the ones the tests will use.
"$PYTHON" - "$TARGET" "$WS_TARGET" <<'EOF'
import sys
from pathlib import Path

from peregrine_rt import _frames, _ws_speedups
from peregrine_rt._http import _parser, _speedups

for module, built in ((_speedups, sys.argv[1]), (_ws_speedups, sys.argv[2])):
    expected = Path(built).resolve()
    found = Path(module.__file__).resolve()
    if found != expected:
        sys.exit(f"sanitize: imported {found}, not the sanitized build {expected}")
    print(f"sanitize: tests import {found}")
if not _parser.SPEEDUPS:
    sys.exit("sanitize: the parser does not use the sanitized build (interface mismatch?)")
if not _frames.FRAME_SPEEDUPS:
    sys.exit("sanitize: the frame reader does not use the sanitized build (interface mismatch?)")
EOF

# The scanner compared with Python directly and every parser case on the C
# fast path, the frame reader compared with Python and the fast path (now in
# C) with wsproto, then the whole parser (C and Python) against h11 and fast path
# against general path, with fewer examples (hypothesis_profile.py says why).
# --capture=sys: a sanitizer writes its report to file descriptor 2 and ends
# the process, so pytest must not be holding that descriptor in a capture file.
# Add -v to see which test was running when a report ends the run.
run_pytest() {
    "$PYTHON" -m pytest -p no:cacheprovider -p hypothesis_profile --capture=sys -q "$@"
}
run_pytest --hypothesis-profile=sanitize \
    tests/unit/test_speedups.py tests/unit/test_http_parser.py \
    tests/unit/test_writer_speedups.py tests/unit/test_ws_speedups.py tests/unit/test_frames.py "${PYTEST_EXTRA[@]}"
run_pytest --hypothesis-profile=sanitize-differential tests/differential "${PYTEST_EXTRA[@]}"
echo "sanitize: no AddressSanitizer or UndefinedBehaviorSanitizer report"
