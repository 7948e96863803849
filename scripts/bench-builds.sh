#!/usr/bin/env bash
# The build benchmark of issue #13: each data set built by `squash build` in one process and through the queue on the
# local function host (builder pool on Azurite queues and blobs) with 1, 2 and 4 workers, by `squash bench-builds`:
# wall time and per-stage time, peak RSS of every worker, messages, storage requests and bytes (metered at the wire),
# estimated cost, and whether the queue build's segments and calibration equal the in-process build's.
#
#   bash scripts/bench-builds.sh [fashion-mnist|1m|10m|all]   (default: fashion-mnist and 1m)
#
# Env: SQUASH_BENCH_DIR (data and results, default data/bench-builds), SQUASH_BENCH_WORKERS (default 1,2,4),
# SQUASH_BENCH_APP (function app for the workers, default the build beside squash).
# 10m generates 10,000,000 × 128 float32 (5 GB) and needs about 20 GB of free disk (source, Azurite's copy, runs, segments).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

which=${1:-default}
work=${SQUASH_BENCH_DIR:-data/bench-builds}
workers=${SQUASH_BENCH_WORKERS:-1,2,4}
mkdir -p "$work"
work=$(cd "$work" && pwd)
dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
squash() { dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll "$@"; }
app_flag=()
[ -n "${SQUASH_BENCH_APP:-}" ] && app_flag=(--app "$SQUASH_BENCH_APP")

ensure_azurite
# Azurite keeps its blobs under TMPDIR: the bench folder, where the disk space was checked.
mkdir -p "$work/azurite-tmp"
TMPDIR="$work/azurite-tmp" start_azurite
trap 'stop_azurite' EXIT

run() { # name, vectors file
  local name=$1 vectors=$2
  echo "== $name"
  squash bench-builds --vectors "$vectors" --store "azure:$SQUASH_TEST_AZURITE" --container "bench-$name" \
    --workers "$workers" --out "$work/results-$name" "${app_flag[@]}" 2>&1 | tee "$work/results-$name.txt"
}

if [ "$which" = fashion-mnist ] || [ "$which" = default ] || [ "$which" = all ]; then
  ensure_fashion_mnist
  [ -f "$work/fashion-mnist/base.fvecs" ] || squash dataset fashion-mnist --out "$work/fashion-mnist"
  run fashion-mnist "$work/fashion-mnist/base.fvecs"
fi
if [ "$which" = 1m ] || [ "$which" = default ] || [ "$which" = all ]; then
  [ -f "$work/gen1m/base.fvecs" ] || squash dataset generate --n 1000000 --dim 128 --seed 7 --queries 100 --out "$work/gen1m"
  run gen1m "$work/gen1m/base.fvecs"
fi
if [ "$which" = 10m ] || [ "$which" = all ]; then
  [ -f "$work/gen10m/base.fvecs" ] || squash dataset generate --n 10000000 --dim 128 --seed 7 --queries 100 --gt-k 10 --out "$work/gen10m"
  run gen10m "$work/gen10m/base.fvecs"
fi
