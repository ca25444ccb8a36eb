#!/usr/bin/env bash
# Installs the Python clients the gateway's tests drive (crates/ymera-gateway/tests):
# schemathesis (OpenAPI conformance run), openapi-spec-validator (the document is valid
# OpenAPI 3.1), standardwebhooks (the webhook signer), httpx + httpx-sse and websockets
# (event-stream clients). Idempotent: nothing is installed when they all import.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$PY" ] || python3 -m venv "$VENV"
if "$PY" -c 'import schemathesis, openapi_spec_validator, standardwebhooks, httpx, httpx_sse, websockets' 2>/dev/null; then
    echo "gateway      ok         schemathesis, openapi-spec-validator, standardwebhooks, httpx-sse, websockets in .venv"
    exit 0
fi
"$PY" -m pip install -q 'schemathesis>=4,<5' 'openapi-spec-validator>=0.7,<1' 'standardwebhooks>=1.0.0,<2' 'httpx>=0.27,<1' 'httpx-sse>=0.4,<1' 'websockets>=13,<16'
echo "gateway      installed  schemathesis, openapi-spec-validator, standardwebhooks, httpx-sse, websockets in .venv"
