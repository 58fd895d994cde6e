#!/usr/bin/env bash
# Create (idempotently) the Python 2.7 environment that runs the Autobahn|Testsuite
# fuzzing client (`wstest`, PyPI's autobahntestsuite, which runs only on Python 2.7).
#
#   bash tests/autobahn/setup_env.sh        # prints the wstest path on its last line
#
# Layout, under $AUTOBAHN_VENV (default: .autobahn-venv in the repo root):
#   bootstrap/   a Python 3 venv holding virtualenv<20.22 (the last line that can
#                still create Python 2.7 environments)
#   py27/        the Python 2.7 virtualenv with autobahntestsuite; py27/bin/wstest
#   .stamp       what was installed; when it matches this script's pins and
#                wstest answers, the script does nothing
#   reports/     where run_autobahn.py writes its reports by default
#
# Environment:
#   AUTOBAHN_VENV  the cache dir (default <repo>/.autobahn-venv)
#   PYTHON27       the Python 2.7 interpreter (default: python2.7 on PATH, else
#                  pyenv's 2.7.x under $PYENV_ROOT or ~/.pyenv)
#   PYTHON3        the Python 3 that hosts virtualenv (default: python3)
#
# Exit codes: 0 ready; 3 no Python 2.7 (or Python 3) found; other: install failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${AUTOBAHN_VENV:-$repo/.autobahn-venv}"

# autobahntestsuite 25.10.1 pins most of its dependencies itself; these are the
# versions that pip resolved for the rest, frozen, so every machine gets the same
# set (all of them still support Python 2.7; wsaccel is built from its sdist,
# which needs a C compiler).
pins="autobahntestsuite==25.10.1
autobahn==0.10.9
Twisted==19.10.0
txaio==2.1.0
zope.interface==4.6.0
Automat==22.10.0
attrs==21.4.0
constantly==15.1.0
hyperlink==21.0.0
idna==2.10
incremental==16.10.1
PyHamcrest==1.10.1
six==1.16.0
typing==3.10.0.0
wsaccel==0.6.6
ujson==2.0.3
klein==17.10.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
pyOpenSSL==19.1.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
service-identity==18.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
unittest2==1.1.0
traceback2==1.4.0
linecache2==1.0.0
argparse==1.4.0
setuptools==44.0.0"
bootstrap_pin="virtualenv<20.22"

log() { printf 'setup_env: %s\n' "$*" >&2; }

# pip, minus the per-package notes about find-links/index dirs that do not hold it.
quiet_pip() {
    "$@" 2> >(grep -v -e 'is ignored: it is neither a file nor a directory' \
        -e 'DEPRECATION: Python 2.7 reached the end of its life' >&2)
}

find_python27() {
    if [ -n "${PYTHON27:-}" ]; then
        printf '%s\n' "$PYTHON27"
        return 0
    fi
    local candidate
    local roots=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv)
    # python2.7 on PATH first (a pyenv shim only counts if it actually runs).
    if candidate="$(command -v python2.7 2>/dev/null)" \
        && "$candidate" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
        printf '%s\n' "$candidate"
        return 0
    fi
    local root
    for root in "${roots[@]}"; do
        [ -n "$root" ] || continue
        for candidate in "$root"/versions/2.7*/bin/python2.7; do
            if [ -x "$candidate" ]; then
                printf '%s\n' "$candidate"
                return 0
            fi
        done
    done
    return 1
}

mkdir -p "$cache"
# One setup at a time (CI's step and a test that creates the env on demand).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.lock"
    flock 9
fi

if ! python27="$(find_python27)"; then
    log "no Python 2.7 interpreter found (set PYTHON27, or install one: pyenv install 2.7.18)"
    exit 3
fi
if ! py27_version="$("$python27" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" \
    || [ "${py27_version%.*}" != "2.7" ]; then
    log "$python27 is not a working Python 2.7"
    exit 3
fi
python3="${PYTHON3:-python3}"
if ! "$python3" -c 'import sys, venv; assert sys.version_info[0] == 3' 2>/dev/null; then
    log "no working Python 3 with venv at '$python3' (set PYTHON3)"
    exit 3
fi

stamp_text="python $py27_version ($python27)
bootstrap $bootstrap_pin
$pins"
wstest="$cache/py27/bin/wstest"
if [ -f "$cache/.stamp" ] && [ "$(cat "$cache/.stamp")" = "$stamp_text" ] \
    && "$wstest" --autobahnversion >/dev/null 2>&1; then
    log "up to date: $cache/py27"
    printf '%s\n' "$wstest"
    exit 0
fi

log "building the Python 2.7 wstest environment in $cache (Python $py27_version at $python27)"
rm -f "$cache/.stamp"
rm -rf "$cache/bootstrap" "$cache/py27"

"$python3" -m venv "$cache/bootstrap"
quiet_pip "$cache/bootstrap/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$bootstrap_pin"

# Keep virtualenv's seed-wheel cache inside the cache dir, not in ~/.local/share.
VIRTUALENV_OVERRIDE_APP_DATA="$cache/virtualenv-app-data" \
    "$cache/bootstrap/bin/python" -m virtualenv --quiet --no-periodic-update \
    -p "$python27" "$cache/py27"

printf '%s\n' "$pins" >"$cache/requirements-py27.txt"
# pip 20.3.4 (the last one for Python 2.7) comes with the virtualenv seed.
quiet_pip "$cache/py27/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location -r "$cache/requirements-py27.txt"

"$wstest" --autobahnversion >&2
printf '%s\n' "$stamp_text" >"$cache/.stamp"
log "ready: $wstest"
printf '%s\n' "$wstest"
