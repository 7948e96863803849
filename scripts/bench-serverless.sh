#!/usr/bin/env bash
# The serverless benchmark of issue #5: the local function host (`squash serve`, Native AOT app) with the
# index in Azurite, driven over HTTP by `squash bench --endpoint`: cold and warm latency, throughput,
# invocations, bytes read, cache hit ratio and cost per million queries for each tree shape.
#
#   bash scripts/bench-serverless.sh [fashion-mnist|generated|both]   (default: both)
#
# Env: SQUASH_BENCH_DIR (work folder, default data/bench-serverless), SQUASH_BENCH_LIMIT (queries per
# shape, default 500), SQUASH_BENCH_SHAPES (default 1x1,10x1,4x2,4x3), SQUASH_BENCH_N (generated vectors,
# default 1000000), SQUASH_SERVE_CONCURRENCY (invocations per instance, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

which=${1:-both}
work=${SQUASH_BENCH_DIR:-data/bench-serverless}
limit=${SQUASH_BENCH_LIMIT:-500}
shapes=${SQUASH_BENCH_SHAPES:-1x1,10x1,4x2,4x3}
n=${SQUASH_BENCH_N:-1000000}
port=${SQUASH_BENCH_PORT:-7081}
slots=${SQUASH_SERVE_CONCURRENCY:-64}
mkdir -p "$work"
dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
squash() { dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll "$@"; }
bash scripts/publish.sh "$work/functionapp" >/dev/null

export AZURITE_BLOB_PORT=${AZURITE_BLOB_PORT:-24000} AZURITE_QUEUE_PORT=${AZURITE_QUEUE_PORT:-24001}
ensure_azurite && start_azurite
serve_pid=""
trap '[ -n "$serve_pid" ] && kill $serve_pid 2>/dev/null; stop_azurite' EXIT
store="azure:$SQUASH_TEST_AZURITE"

run() { # name, data dir, search flags
  local name=$1 data=$2; shift 2
  echo "== $name: building into Azurite"
  squash build --store "$store" --container bench --index "$name" --vectors "$data/base.fvecs"
  dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll serve --store "$store" --container bench --app "$work/functionapp" --preload "$name" \
    --port "$port" --concurrency "$slots" > "$work/serve-$name.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 150); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
  squash bench --endpoint "http://127.0.0.1:$port" --index "$name" --queries "$data/query.fvecs" \
    --ground-truth "$data/groundtruth.ivecs" --limit "$limit" --tree-shapes "$shapes" --cold-samples 5 --concurrency 2 \
    --out "$work/bench-$name" "$@"
  kill $serve_pid; wait $serve_pid 2>/dev/null || true; serve_pid=""
}

if [ "$which" = fashion-mnist ] || [ "$which" = both ]; then
  ensure_fashion_mnist
  [ -f "$work/fashion-mnist/groundtruth.ivecs" ] || squash dataset fashion-mnist --out "$work/fashion-mnist"
  run fashion-mnist "$work/fashion-mnist"   # the app's defaults: CF 1.3, R 2
fi
if [ "$which" = generated ] || [ "$which" = both ]; then
  [ -f "$work/generated/groundtruth.ivecs" ] || squash dataset generate --n "$n" --dim 128 --seed 7 --out "$work/generated"
  run generated "$work/generated" --cf 1.7 --r 4   # the 1M setting of bench/README.md (recall ≈ 0.96)
fi
