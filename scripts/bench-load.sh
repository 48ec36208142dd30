#!/usr/bin/env bash
# The load benchmark of docs/PERFORMANCE.md (issue 2): POST /exec/simulate on the gateway
# with its audit log in the live Postgres, against the bare mux handler, in one run, with
# wrk on the same machine. Everything binds to and targets 127.0.0.1 only, is bounded by
# DURATION, and every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
DB_NAME=secureexec_bench
PG=postgres://postgres@127.0.0.1:5432
GW_PORT=5093
BARE_PORT=5092

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
bash .ci/services.sh
go build -o bin/secureexec ./cmd/secureexec
go build -o bin/barehandler ./cmd/barehandler

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$1/$2" && return 0; sleep 0.1; done; echo "port $1 did not answer" >&2; return 1; }
load() { wrk -t"$THREADS" -c"$CONNS" -d"$1" --latency -s scripts/simulate.lua "http://127.0.0.1:$2/exec/simulate"; }
# CPU time (ticks) of processes, and of this database's Postgres backends: what a request costs
# each side, whatever else the machine is doing.
cpu_of() { local t=0; for p in "$@"; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
pg_pids() { pgrep -f "postgres: .*: postgres $DB_NAME " || true; }
requests() { awk '/requests in/{print $1}' "$1"; }
hz=$(getconf CLK_TCK)

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; wrk -t$THREADS -c$CONNS -d$DURATION"

# 1. The bare handler.
./bin/barehandler -addr 127.0.0.1:$BARE_PORT & pids+=($!)
bare_pid=$!
sleep 0.3
load 3s $BARE_PORT >/dev/null
echo "== bare handler"
b0=$(cpu_of $bare_pid)
load "$DURATION" $BARE_PORT | tee /tmp/bench-bare.txt
b1=$(cpu_of $bare_pid)
kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true

# 2. The gateway, audit to a fresh database.
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME" -c "CREATE DATABASE $DB_NAME"
datadir=$(mktemp -d)
HOST=127.0.0.1 PORT=$GW_PORT DATABASE_URL="$PG/$DB_NAME?sslmode=disable" SECUREEXEC_DATA_DIR="$datadir" \
  LOG_FILE= LOG_LEVEL=warn ./bin/secureexec serve & pids+=($!)
gw_pid=$!
wait_port $GW_PORT health
load 3s $GW_PORT >/dev/null
echo "== gateway"
g0=$(cpu_of $gw_pid); p0=$(cpu_of $(pg_pids))
load "$DURATION" $GW_PORT | tee /tmp/bench-gw.txt
g1=$(cpu_of $gw_pid); p1=$(cpu_of $(pg_pids))
answered=$(curl -fsS http://127.0.0.1:$GW_PORT/metrics | awk '/^secureexec_http_requests_total\{code="200",route="exec_simulate"\}/{printf "%d", $2}')
kill -TERM "$gw_pid"; wait "$gw_pid" 2>/dev/null || true   # graceful: drains the audit queue
rows=$(psql -tAq -h 127.0.0.1 -U postgres -d $DB_NAME -c "SELECT count(*) FROM secureexec_calls")
spooled=$(find "$datadir" -name '*.spool*' -size +0 2>/dev/null | wc -l)
rm -rf "$datadir"

rps() { awk '/Requests\/sec/{print $2}' "$1"; }
p99() { awk '/ 99%/{print $2}' "$1"; }
bare=$(rps /tmp/bench-bare.txt); gw=$(rps /tmp/bench-gw.txt)
echo
echo "bare handler: $bare req/s, p99 $(p99 /tmp/bench-bare.txt)"
echo "gateway:      $gw req/s, p99 $(p99 /tmp/bench-gw.txt)"
echo "ratio:        $(awk -v a="$gw" -v b="$bare" 'BEGIN{printf "%.2f", a/b}')"
echo "CPU per request: bare handler $(( (b1-b0) * 1000000 / hz / $(requests /tmp/bench-bare.txt) )) us; gateway $(( (g1-g0) * 1000000 / hz / $(requests /tmp/bench-gw.txt) )) us + postgres $(( (p1-p0) * 1000000 / hz / $(requests /tmp/bench-gw.txt) )) us"
echo "answered 200: ${answered%.*}, rows in secureexec_calls: $rows, non-empty spool files: $spooled"
[ "${answered%.*}" = "$rows" ] || { echo "MISMATCH: rows != answered" >&2; exit 1; }
