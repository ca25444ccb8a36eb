#!/usr/bin/env bash
# Installs the Python SDK (sdk/python, package `ymera`, editable) and pytest into the
# project venv for its test suite (scripts/test runs it). Idempotent: nothing is
# installed when `ymera` already imports from sdk/python and pytest is present.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$PY" ] || python3 -m venv "$VENV"
if "$PY" - "$ROOT/sdk/python" <<'PYEOF' 2>/dev/null; then
import os, sys, ymera, pytest, nats
sys.exit(0 if os.path.realpath(ymera.__file__).startswith(os.path.realpath(sys.argv[1])) else 1)
PYEOF
    echo "python-sdk   ok         ymera (sdk/python) and pytest in .venv"
    exit 0
fi
"$PY" -m pip install -q 'pytest>=7,<10' -e "$ROOT/sdk/python"
echo "python-sdk   installed  ymera (sdk/python, editable) and pytest in .venv"
