#!/bin/sh
# Run the edgesparse demo app in its own virtual environment (created on first use).
#   ./run.sh [app arguments]          e.g. ./run.sh test_input.wav --json
# Environment: PYTHON (interpreter that creates the venv, default python3),
#   EDGESPARSE_VENV (venv directory, default ./venv; an existing one is reused),
#   EDGESPARSE_SKIP_INSTALL=1 (do not run pip; the venv already has the runtime).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
VENV=${EDGESPARSE_VENV:-$HERE/venv}
APP=@APP@
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment $VENV" >&2
    "$PYTHON" -m venv "$VENV" >&2
fi
if [ "${EDGESPARSE_SKIP_INSTALL:-0}" != 1 ]; then
    # pip's own output goes to stderr so that --json keeps stdout machine-readable.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" >&2
fi
exec "$VENV/bin/python" "$HERE/$APP" "$@"
