#!/usr/bin/env bash
# The wheel smoke suite for one Python (CI runs the full suite on 3.11 and this on the
# other versions): a fresh venv of PYTHON, `pip install WHEEL` plus the tests' needs,
# then part of the python-tests with `rwsgi` from that venv's PATH as the server:
# the PEP 3333 rules (environ, start_response, input, response, wsgiref's validator),
# the Flask and Django examples, one tracker report (stamp counting), and `--preload`
# (the fork server touches the interpreter's fork and gc protocols, which move between
# versions).
#
#   bash scripts/smoke-wheel.sh /root/.pyenv/versions/3.12.1/bin/python3 target/wheels-ci/rwsgi-…-cp312-….whl
#
# pytest runs inside the fresh venv, so the servers it starts get that venv as
# VIRTUAL_ENV, and the Flask and Django they import are that venv's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$1
WHEEL=$2
minor=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV=$ROOT/target/smoke-venv-$minor
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL" -r python-tests/requirements-smoke.txt
cd python-tests
RWSGI_BIN="$VENV/bin/rwsgi" "$VENV/bin/python" -m pytest -q \
    test_environ.py test_start_response.py test_input.py test_response.py test_validator.py \
    test_apps.py test_preload.py \
    test_queue_time.py::test_every_stamp_format_is_ok_and_bad_stamps_are_counted \
    -k "not nginx"
