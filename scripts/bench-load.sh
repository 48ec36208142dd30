#!/usr/bin/env bash
# The load benchmark of docs/PERFORMANCE.md (issue 2): POST /exec/simulate on the gateway
# with its audit log in the live Postgres, against the bare mux handler, in one run, with
# wrk on the same machine. Everything binds to and targets 127.0.0.1 only, is bounded by
# DURATION, and every process started here is stopped by its PID.
# BIN=path runs another build of the gateway (to compare before and after, interleaved);
# BARE=0 skips the bare handler (then no ratio is printed).
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
BARE=${BARE:-1}
if [ -z "${BIN:-}" ]; then
  go build -o bin/secureexec ./cmd/secureexec
  BIN=./bin/secureexec
fi
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
# The CPU this shell's finished children used (cutime + cstime, in ticks): read around a load
# run, the difference is wrk's, which both sides pay on the same two cores.
children_ticks() { awk '{print $16 + $17}' /proc/$$/stat; }
hz=$(getconf CLK_TCK)

pgq() { psql -tAq -h 127.0.0.1 -U postgres -d postgres -c "$1"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t$THREADS -c$CONNS -d$DURATION; gateway $BIN"

# 1. The bare handler.
if [ "$BARE" = 1 ]; then
  ./bin/barehandler -addr 127.0.0.1:$BARE_PORT & pids+=($!)
  bare_pid=$!
  sleep 0.3
  load 3s $BARE_PORT >/dev/null
  echo "== bare handler"
  b0=$(cpu_of $bare_pid); bw0=$(children_ticks)
  load "$DURATION" $BARE_PORT | tee /tmp/bench-bare.txt
  b1=$(cpu_of $bare_pid); bw1=$(children_ticks)
  kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true
fi

# 2. The gateway, audit to a fresh database.
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME" -c "CREATE DATABASE $DB_NAME"
datadir=$(mktemp -d)
HOST=127.0.0.1 PORT=$GW_PORT DATABASE_URL="$PG/$DB_NAME?sslmode=disable" SECUREEXEC_DATA_DIR="$datadir" \
  LOG_FILE= LOG_LEVEL=warn "$BIN" serve & pids+=($!)
gw_pid=$!
wait_port $GW_PORT health
load 3s $GW_PORT >/dev/null
echo "== gateway"
# WAL written and transactions committed: what each audit row costs Postgres beyond CPU.
stats() { pgq "SELECT pg_current_wal_lsn() || ' ' || xact_commit FROM pg_stat_database WHERE datname = '$DB_NAME'"; }
read -r w0 c0 < <(stats)
g0=$(cpu_of $gw_pid); p0=$(cpu_of $(pg_pids)); gw0=$(children_ticks)
load "$DURATION" $GW_PORT | tee /tmp/bench-gw.txt
g1=$(cpu_of $gw_pid); p1=$(cpu_of $(pg_pids)); gw1=$(children_ticks)
read -r w1 c1 < <(stats)
answered=$(curl -fsS http://127.0.0.1:$GW_PORT/metrics | awk '/^secureexec_http_requests_total\{code="200",route="exec_simulate"\}/{printf "%d", $2}')
kill -TERM "$gw_pid"; wait "$gw_pid" 2>/dev/null || true   # graceful: drains the audit queue
rows=$(psql -tAq -h 127.0.0.1 -U postgres -d $DB_NAME -c "SELECT count(*) FROM secureexec_calls")
spooled=$(find "$datadir" -name '*.spool*' -size +0 2>/dev/null | wc -l)
rm -rf "$datadir"

rps() { awk '/Requests\/sec/{print $2}' "$1"; }
p99() { awk '/ 99%/{print $2}' "$1"; }
n=$(requests /tmp/bench-gw.txt)
gw=$(rps /tmp/bench-gw.txt)
echo
if [ "$BARE" = 1 ]; then
  bare=$(rps /tmp/bench-bare.txt)
  nb=$(requests /tmp/bench-bare.txt)
  echo "bare handler: $bare req/s, p99 $(p99 /tmp/bench-bare.txt), CPU per request $(( (b1-b0) * 1000000 / hz / nb )) us + wrk $(( (bw1-bw0) * 1000000 / hz / nb )) us"
fi
echo "gateway:      $gw req/s, p99 $(p99 /tmp/bench-gw.txt), CPU per request $(( (g1-g0) * 1000000 / hz / n )) us + postgres $(( (p1-p0) * 1000000 / hz / n )) us + wrk $(( (gw1-gw0) * 1000000 / hz / n )) us"
[ "$BARE" = 1 ] && echo "ratio:        $(awk -v a="$gw" -v b="$bare" 'BEGIN{printf "%.2f", a/b}')"
wal=$(pgq "SELECT pg_wal_lsn_diff('$w1', '$w0')::bigint")
echo "postgres per request: $(( wal / n )) bytes of WAL, $(( (c1 - c0) * 1000 / n )) commits per 1,000 requests"
echo "answered 200: ${answered%.*}, rows in secureexec_calls: $rows, non-empty spool files: $spooled"
[ "${answered%.*}" = "$rows" ] || { echo "MISMATCH: rows != answered" >&2; exit 1; }
