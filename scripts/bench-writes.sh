#!/usr/bin/env bash
# Write-path figures of issue #15 (bench/writes.md): an index in Azurite, `squash serve` (the published app), then
# scripts/bench-writes.py: acknowledgement latency, write throughput, strong-read overhead with the tail left behind.
#   bash scripts/bench-writes.sh        Env: SQUASH_BENCH_N (default 100000), SQUASH_BENCH_DIR (default data/bench-writes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
work=${SQUASH_BENCH_DIR:-data/bench-writes}
n=${SQUASH_BENCH_N:-100000}
port=${SQUASH_BENCH_PORT:-7091}
mkdir -p "$work"
dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
squash() { dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll "$@"; }
[ -x "$work/functionapp/Squash.Functions" ] || bash scripts/publish.sh "$work/functionapp" >/dev/null
ensure_azurite && start_azurite
serve_pid=""
trap '[ -n "$serve_pid" ] && kill $serve_pid 2>/dev/null; stop_azurite' EXIT
store="azure:$SQUASH_TEST_AZURITE"
[ -f "$work/data/base.fvecs" ] || squash dataset generate --n "$n" --dim 128 --seed 15 --queries 100 --out "$work/data"
squash build --store "$store" --container bench --index writes --vectors "$work/data/base.fvecs"
squash serve --store "$store" --container bench --app "$work/functionapp" --preload writes --port "$port" > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 150); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
python3 scripts/bench-writes.py "http://127.0.0.1:$port" writes 128 "$@"
