#!/usr/bin/env bash
# The Postgres outage drill of docs/PERFORMANCE.md (issue 2): POST /exec/simulate under load
# while Postgres is stopped for OUTAGE seconds, then started again; afterwards the rows in
# secureexec_calls must equal the calls answered, none twice. Postgres is stopped and
# started with the machine's own service command; the gateway and wrk, started here, are
# stopped by PID. Everything targets 127.0.0.1 and is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

OUTAGE=${OUTAGE:-60}
LEAD=${LEAD:-10}
TAIL=${TAIL:-10}
CONNS=${CONNS:-8}
DB_NAME=secureexec_drill
PORT=5094
PG=postgres://postgres@127.0.0.1:5432
cluster="$(ls /etc/postgresql | head -n1) main"

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
bash .ci/services.sh
go build -o bin/secureexec ./cmd/secureexec

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pg_isready -h 127.0.0.1 -q || pg_ctlcluster --skip-systemctl-redirect $cluster start || true
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME" -c "CREATE DATABASE $DB_NAME"
datadir=$(mktemp -d)
HOST=127.0.0.1 PORT=$PORT DATABASE_URL="$PG/$DB_NAME?sslmode=disable" SECUREEXEC_DATA_DIR="$datadir" \
  LOG_FILE= LOG_LEVEL=warn X402_NETWORK=off ./bin/secureexec serve 2>/tmp/drill-gateway.log & pids+=($!)
gw=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:$PORT/health && break; sleep 0.1; done

total=$((LEAD + OUTAGE + TAIL))
wrk -t1 -c"$CONNS" -d"${total}s" -s scripts/simulate.lua "http://127.0.0.1:$PORT/exec/simulate" >/tmp/drill-wrk.txt & pids+=($!)
load=$!
sleep "$LEAD"
echo "drill: stopping Postgres for ${OUTAGE}s under load"
pg_ctlcluster --skip-systemctl-redirect $cluster stop -m fast
sleep "$OUTAGE"
spooled=$(curl -fsS http://127.0.0.1:$PORT/metrics | awk '/^secureexec_audit_spool_depth /{printf "%d", $2}')
echo "drill: starting Postgres again (spooled while it was away: ${spooled})"
pg_ctlcluster --skip-systemctl-redirect $cluster start
wait "$load" || true
answered=$(curl -fsS http://127.0.0.1:$PORT/metrics | awk '/^secureexec_http_requests_total\{code="200",route="exec_simulate"\}/{printf "%d", $2}')
# Let the replayer empty the spool, then stop gracefully (which drains what is left).
for _ in $(seq 1 120); do
  depth=$(curl -fsS http://127.0.0.1:$PORT/metrics | awk '/^secureexec_audit_spool_depth /{printf "%d", $2}')
  [ "${depth%.*}" = "0" ] && break
  sleep 1
done
kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
rows=$(psql -tAq -h 127.0.0.1 -U postgres -d $DB_NAME -c "SELECT count(*) FROM secureexec_calls")
dupes=$(psql -tAq -h 127.0.0.1 -U postgres -d $DB_NAME -c "SELECT count(*) - count(DISTINCT job_id) FROM secureexec_calls")
rm -rf "$datadir"
grep -E "Requests/sec|requests in|Non-2xx|Socket errors" /tmp/drill-wrk.txt || true
echo "drill: answered 200: ${answered%.*}, rows: $rows, duplicate job ids: $dupes, peak spool depth seen: ${spooled%.*}"
[ "${answered%.*}" = "$rows" ] && [ "$dupes" = "0" ] || { echo "drill: FAILED: records lost or doubled" >&2; exit 1; }
echo "drill: nothing lost, nothing written twice"
