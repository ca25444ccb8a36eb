#!/usr/bin/env bash
# Installs what the gateway's collaboration tests drive (crates/ymera-gateway/tests/collab*):
#   tests/collab-js/node_modules   `npm ci` from package-lock.json: yjs, y-websocket, ws,
#                                  esbuild (bundles the browser page), puppeteer-core
#   chromium                       Debian `chromium` (headless, driven by puppeteer-core)
# Idempotent: npm ci runs only when node_modules is missing or older than the lock file;
# apt-get runs only when /usr/bin/chromium is missing. Needs node + npm (exits 1 without).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="$ROOT/tests/collab-js"
export DEBIAN_FRONTEND=noninteractive

if ! command -v npm >/dev/null 2>&1; then
    echo "collab-js    FAILED     npm not found (install Node.js 20+)"
    exit 1
fi
stamp="$DIR/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ ! "$DIR/package-lock.json" -nt "$stamp" ] && [ -d "$DIR/node_modules/y-websocket" ]; then
    echo "collab-js    ok         tests/collab-js/node_modules"
else
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "collab-js    installed  tests/collab-js/node_modules (npm ci)"
fi

if [ -x /usr/bin/chromium ]; then
    echo "chromium     ok         $(/usr/bin/chromium --version 2>/dev/null | head -1)"
else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
    echo "chromium     installed  $(/usr/bin/chromium --version 2>/dev/null | head -1)"
fi
