#!/usr/bin/env bash
# The x402 load benchmark of docs/PERFORMANCE.md (issue 3): x402-paid dry-run calls end to
# end (verify, nonce claim, tool, proof, audit, settlement) with the live Postgres and Redis,
# the chain in another process (anvil from npm, so chain reads run concurrently as against a
# real node), and cmd/x402load signing a fresh EIP-3009 payment per request.
# MODE=batch|sync, N payments, C connections; CHAIN=anvil (default) or dev (the in-process
# simulated chain, no anvil); BIN=path runs another build of the gateway (to compare before and
# after); PPROF=dir builds the gateway with net/http/pprof (a build overlay, nothing in the tree)
# and saves CPU, block and mutex profiles of the load into dir. GEN=go (default) sends the N
# payments with cmd/x402load's Go client; GEN=wrk signs N payments with it, then sends them for
# DURATION with wrk -t2 (scripts/x402-wrk.lua), which costs the shared machine less per request.
# 127.0.0.1 only; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-batch}
CHAIN=${CHAIN:-anvil}
PPROF=${PPROF:-}
N=${N:-10000}
C=${C:-32}
GEN=${GEN:-go}
DURATION=${DURATION:-8s}
DB_NAME=secureexec_x402bench
PG=postgres://postgres@127.0.0.1:5432
ANVIL=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
RPC_PORT=18545
GW_PORT=5097
# anvil's well-known public test keys (never used on a real network)
KEY0=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 # deployer, settlement
ADDR1=0x70997970C51812dc3A010C7d01b50e0d17dc79C8                         # payTo
PAYERS=(0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a
        0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6
        0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a
        0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba)
PAYER_ADDRS=(0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC 0x90F79bf6EB2c4f870365E785982E1f101E93b906
             0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65 0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc)

test -x "$ANVIL" || npm ci --no-audit --no-fund
bash .ci/services.sh
overlay=()
if [ -n "$PPROF" ]; then
  mkdir -p "$PPROF"
  ovdir=$(mktemp -d)
  cat >"$ovdir/pprof.go" <<'GO'
package main

import (
	"net/http"
	_ "net/http/pprof"
	"runtime"
)

func init() {
	runtime.SetBlockProfileRate(10000)
	runtime.SetMutexProfileFraction(10)
	go func() { _ = http.ListenAndServe("127.0.0.1:6061", nil) }()
}
GO
  printf '{"Replace":{"%s":"%s"}}' "$PWD/cmd/secureexec/zz_bench_pprof.go" "$ovdir/pprof.go" >"$ovdir/overlay.json"
  overlay=(-overlay "$ovdir/overlay.json")
fi
if [ -z "${BIN:-}" ]; then
  go build "${overlay[@]}" -o bin/secureexec ./cmd/secureexec
  BIN=./bin/secureexec
fi
go build -o bin/x402load ./cmd/x402load

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

datadir=$(mktemp -d)
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME" -c "CREATE DATABASE $DB_NAME"
common_env=(HOST=127.0.0.1 PORT=$GW_PORT DATABASE_URL="$PG/$DB_NAME?sslmode=disable" REDIS_URL=redis://127.0.0.1:6379/5
  X402_SETTLEMENT_MODE=$MODE SECUREEXEC_DATA_DIR="$datadir" LOG_FILE="$datadir/gateway.log" LOG_LEVEL=warn)
if [ "$CHAIN" = dev ]; then
  env "${common_env[@]}" X402_NETWORK=dev "$BIN" serve 2>/dev/null & pids+=($!)
  gw=$!
  accounts="$datadir/devchain-accounts.json"
else
  "$ANVIL" --host 127.0.0.1 --port $RPC_PORT --chain-id 31337 --silent & pids+=($!)
  for _ in $(seq 1 100); do curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' http://127.0.0.1:$RPC_PORT && break; sleep 0.1; done
  addrs=$("$BIN" devchain deploy --rpc http://127.0.0.1:$RPC_PORT --key $KEY0)
  token=$(echo "$addrs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  batcher=$(echo "$addrs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["batcher"])')
  mint_args=(); for a in "${PAYER_ADDRS[@]}"; do mint_args+=(--to "$a"); done
  "$BIN" devchain mint --rpc http://127.0.0.1:$RPC_PORT --key $KEY0 --token "$token" --amount 100000 "${mint_args[@]}" >/dev/null
  accounts="$datadir/accounts.json"
  python3 - "$accounts" "${PAYERS[@]}" <<'PY'
import json, sys
path, keys = sys.argv[1], sys.argv[2:]
# x402load skips the first account (the dev chain's payTo); list the payers after it.
json.dump({"accounts": [{"privateKey": "0x" + "00" * 31 + "01"}] + [{"privateKey": k} for k in keys]}, open(path, "w"))
PY
  env "${common_env[@]}" X402_NETWORK=custom ETH_RPC_URL=http://127.0.0.1:$RPC_PORT X402_TOKEN_ADDRESS="$token" \
    X402_BATCHER_ADDRESS="$batcher" SETTLEMENT_PRIVATE_KEY=$KEY0 PAYMENT_WALLET=$ADDR1 "$BIN" serve 2>/dev/null & pids+=($!)
  gw=$!
fi
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:$GW_PORT/health && break; sleep 0.1; done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); mode $MODE, $N payments, $C connections, chain: $CHAIN; gateway $BIN"
# Profiles cover the middle of the run: they start two seconds after the load does (with
# GEN=wrk, after the payments are signed).
profile() {
  [ -n "$PPROF" ] || return 0
  (sleep 2; curl -fsS -o "$PPROF/cpu.pprof" "http://127.0.0.1:6061/debug/pprof/profile?seconds=${PPROF_SECONDS:-5}";
   curl -fsS -o "$PPROF/block.pprof" http://127.0.0.1:6061/debug/pprof/block;
   curl -fsS -o "$PPROF/mutex.pprof" http://127.0.0.1:6061/debug/pprof/mutex) & pids+=($!)
}
# CPU time (ticks) of the gateway, of this database's Postgres backends and of anvil: what a
# request costs them, whatever else the shared machine is doing.
cpu_of() { local t=0; for p in "$@"; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
pg_pids() { pgrep -f "postgres: .*: postgres $DB_NAME " || true; }
anvil_pid() { pgrep -f "anvil --host 127.0.0.1 --port $RPC_PORT" || true; }
redis_pid() { pgrep -f "redis-server 127.0.0.1:6379" || true; }
gw0=$(cpu_of $gw); pg0=$(cpu_of $(pg_pids)); an0=$(cpu_of $(anvil_pid)); rd0=$(cpu_of $(redis_pid))
if [ "$GEN" = wrk ]; then
  command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
  signed="$datadir/signed.txt"
  ./bin/x402load -url http://127.0.0.1:$GW_PORT/exec/tool -accounts "$accounts" -n "$N" -out "$signed"
  gw0=$(cpu_of $gw); pg0=$(cpu_of $(pg_pids)); an0=$(cpu_of $(anvil_pid)); rd0=$(cpu_of $(redis_pid))
  # The CPU this shell's finished children used (cutime + cstime, in ticks): the difference is wrk's.
  children_ticks() { awk '{print $16 + $17}' /proc/$$/stat; }
  ch0=$(children_ticks)
  profile
  wrk -t2 -c"$C" -d"$DURATION" --latency -s scripts/x402-wrk.lua http://127.0.0.1:$GW_PORT/exec/tool -- "$signed" 2 >"$datadir/wrk.txt"
  ch1=$(children_ticks)
  cat "$datadir/wrk.txt"
  grep -q EXHAUSTED "$datadir/wrk.txt" && { echo "the run used up the $N signed payments: raise N or shorten DURATION" >&2; exit 1; }
  grep -q 'Non-2xx' "$datadir/wrk.txt" && { echo "some paid calls were not answered 200" >&2; exit 1; }
  N=$(awk '/requests in/{print $1}' "$datadir/wrk.txt")
  echo "load generator CPU per request: $(( (ch1 - ch0) * 1000000 / $(getconf CLK_TCK) / N )) us (wrk)"
else
  profile
  ./bin/x402load -url http://127.0.0.1:$GW_PORT/exec/tool -accounts "$accounts" -n "$N" -c "$C"
fi
gw1=$(cpu_of $gw); pg1=$(cpu_of $(pg_pids)); an1=$(cpu_of $(anvil_pid)); rd1=$(cpu_of $(redis_pid))
hz=$(getconf CLK_TCK)
per() { echo $(( ($2 - $1) * 1000000 / hz / N )); }
echo "CPU per request: gateway $(per $gw0 $gw1) us, postgres $(per $pg0 $pg1) us (backends alive at the end), anvil $(per $an0 $an1) us, redis $(per $rd0 $rd1) us"
sleep 3
echo "payments by status: $(psql -tAq -h 127.0.0.1 -U postgres -d $DB_NAME -c "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM payments GROUP BY 1 ORDER BY 1) s")"
kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
rm -rf "$datadir"
