#!/usr/bin/env bash
# Write-path figures of issue #15 (bench/writes.md): an index in Azurite built from N generated vectors, `squash serve`
# (the published app, with its queue-triggered ingest), then `squash bench-writes` through the HTTP API: sustained
# ingest while replacing 10 % and 50 %, recall against fresh builds, ack latency, lag at a fixed rate, strong-read overhead.
#   bash scripts/bench-writes.sh [bench-writes flags]
#   Env: SQUASH_BENCH_N (default 100000), SQUASH_BENCH_DIR (default data/bench-writes), SQUASH_BENCH_PORT (default: a free one),
#   SQUASH_BENCH_APP=build: serve the Release build beside squash instead of publishing the Native AOT app (no AOT compile),
#   SQUASH_CLI: the squash.dll to run (e.g. a copy of an earlier Release bin folder, for before/after; default: this checkout's, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
work=${SQUASH_BENCH_DIR:-data/bench-writes}
n=${SQUASH_BENCH_N:-100000}
port=${SQUASH_BENCH_PORT:-$(free_ports 1)}
mkdir -p "$work"
cli=${SQUASH_CLI:-src/Squash.Cli/bin/Release/net10.0/squash.dll}
[ -n "${SQUASH_CLI:-}" ] || dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
squash() { dotnet "$cli" "$@"; }
app=()
if [ "${SQUASH_BENCH_APP:-}" != build ]; then
  [ -x "$work/functionapp/Squash.Functions" ] || bash scripts/publish.sh "$work/functionapp" >/dev/null
  app=(--app "$work/functionapp")
fi
# 2N vectors from one mixture: the first N are built, the rest replace rows (fvecs rows are 4 + 4 × 128 bytes).
data="$work/data-$n"
if [ ! -f "$data/pool.fvecs" ]; then
  squash dataset generate --n $((2 * n)) --dim 128 --seed 15 --queries 100 --out "$data"
  head -c $((n * 516)) "$data/base.fvecs" > "$data/built.fvecs"
  tail -c $((n * 516)) "$data/base.fvecs" > "$data/pool.fvecs"
fi
ensure_azurite && start_azurite
serve_pid=""
trap '[ -n "$serve_pid" ] && kill $serve_pid 2>/dev/null; stop_azurite' EXIT
store="azure:$SQUASH_TEST_AZURITE"
squash build --store "$store" --container bench --index writes --vectors "$data/built.fvecs"
# dotnet itself in the background (not the shell function), so that the trap's kill reaches the server.
dotnet "$cli" serve --store "$store" --container bench "${app[@]}" --preload writes --port "$port" > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 150); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
squash bench-writes --endpoint "http://127.0.0.1:$port" --store "$store" --container bench --index writes \
  --base "$data/built.fvecs" --pool "$data/pool.fvecs" --queries "$data/query.fvecs" "$@"
