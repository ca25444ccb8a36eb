#!/usr/bin/env bash
# Disaster-recovery drill on a local stack: the figures of deploy/DR-RUNBOOK.md ("RTO").
#
#   deploy/backup/dr-drill.sh [SIZE_MB] [YMERA]
#
# 1. `ymera up` a stack in a temporary directory, fill its database with SIZE_MB (default 300)
#    of message history and send 1,000 messages to an agent that is not there;
# 2. `ymera backup create --tar`;
# 3. disaster: `ymera down` and delete every data directory;
# 4. recovery, timed: `ymera backup verify`, `ymera backup restore --dir` (starts the new stack's
#    servers itself), `ymera up`, until `ymera health --expect 5` passes.
# Prints one line per phase and the RTO. YMERA (the binary timed for create/verify/restore)
# defaults to target/release/ymera; YMERA_STACK (the one that runs `ymera up`, whose service
# binaries sit beside it) defaults to YMERA. Build first: cargo build --release --workspace --bins.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SIZE_MB=${1:-300}
YMERA=${2:-$ROOT/target/release/ymera}
STACK=${YMERA_STACK:-$YMERA}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ymera-dr-drill.XXXXXX")
chmod 755 "$WORK" # PostgreSQL runs as `postgres` when this runs as root
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { # <dir>
  COMM_RATE_LIMIT=1000000 LOG_LEVEL=warn "$STACK" up --detach --dir "$1" --nats-port "$(port)" --nats-monitor-port "$(port)" \
    --postgres-port "$(port)" --redis-port "$(port)" --http-base-port "$(port)" >/dev/null
}
cleanup() {
  "$STACK" down --dir "$WORK/a" >/dev/null 2>&1 || true
  "$STACK" down --dir "$WORK/b" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
json() { python3 -c "import json,sys; print(json.load(open('$1'))$2)"; }

up "$WORK/a"
NATS=$(json "$WORK/a/stack.json" "['nats_url']")
PG=$(json "$WORK/a/stack.json" "['postgres_url']")
"$YMERA" --nats-url "$NATS" health --expect 5 >/dev/null || sleep 5
PSQL=$(dirname "$(readlink -f /usr/lib/postgresql/15/bin/psql)")/psql
ROWS=$((SIZE_MB * 1000000 / 1200))
"$PSQL" -q "$PG" -c "INSERT INTO message_history (message_id, type, sender, recipients, subject, payload, status, created_at)
  SELECT 'drill-' || i, 'event', 'drill', '[\"drill\"]'::jsonb, 'drill ' || i,
         jsonb_build_object('text', (SELECT string_agg(md5(i::text || '.' || g::text), ' ') FROM generate_series(1, 24) g)),
         'delivered', now() FROM generate_series(1, $ROWS) i" >/dev/null
for i in $(seq 1 1000); do echo "$i"; done |
  xargs -P 8 -I{} "$YMERA" --nats-url "$NATS" send --from "drill-{}" --to absent-agent --subject "drill {}" >/dev/null
DB_MB=$("$PSQL" -tA "$PG" -c "SELECT round(pg_database_size(current_database()) / 1e6)")

t0=$(now)
"$YMERA" --json backup create --dir "$WORK/a" --out "$WORK/out" --tar >"$WORK/create.json"
t1=$(now)
ARCHIVE=$(json "$WORK/create.json" "['archive']")
ARCHIVE_MB=$(python3 -c "import os; print(round(os.path.getsize('$ARCHIVE') / 1e6))")
echo "create        $(secs "$t0" "$t1") s  (database ${DB_MB} MB, archive ${ARCHIVE_MB} MB)"

"$STACK" down --dir "$WORK/a" >/dev/null
rm -rf "$WORK/a"
echo "disaster      the stack and every data directory are gone"

t2=$(now)
"$YMERA" backup verify "$ARCHIVE" >/dev/null
t3=$(now)
echo "verify        $(secs "$t2" "$t3") s"
"$YMERA" backup restore "$ARCHIVE" --dir "$WORK/b" >/dev/null
t4=$(now)
echo "restore       $(secs "$t3" "$t4") s"
up "$WORK/b"
NATS=$(json "$WORK/b/stack.json" "['nats_url']")
until "$YMERA" --nats-url "$NATS" health --expect 5 >/dev/null 2>&1; do sleep 0.5; done
t5=$(now)
echo "services up   $(secs "$t4" "$t5") s  (ymera up until ymera health --expect 5 passes)"
echo "RTO           $(secs "$t2" "$t5") s  from the archive to a healthy platform (verify + restore + start)"
