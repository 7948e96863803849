#!/usr/bin/env bash
# Recall targets on Fashion-MNIST (issue #12): for each build seed, a default build (with its calibration) and an
# in-process sweep of targets on the 10,000 test queries, unfiltered and with the label filters; then a summary of
# achieved recall and QPS per target and seed, and the calibration's share of the build time.
#
#   bash scripts/bench-recall-targets.sh [SEEDS]      (default: 1 2 3 4 5)
#
# Env: SQUASH_BENCH_DIR (work folder, default data/bench-recall), SQUASH_BENCH_TARGETS (default 0.9,0.95,0.99),
# SQUASH_BENCH_RUNS (timed runs per point, median QPS; default 3), SQUASH_CLI (a squash.dll to run instead of building
# this checkout's: before/after comparisons run a copy of the old bin folder), SQUASH_BENCH_REUSE=1 (keep an index
# already built in the work folder: the second binary of a query-time comparison benches the same builds).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

seeds=${1:-1 2 3 4 5}
work=${SQUASH_BENCH_DIR:-data/bench-recall}
targets=${SQUASH_BENCH_TARGETS:-0.9,0.95,0.99}
runs=${SQUASH_BENCH_RUNS:-3}
mkdir -p "$work"
cli=${SQUASH_CLI:-}
if [ -z "$cli" ]; then
  dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
  cli=src/Squash.Cli/bin/Release/net10.0/squash.dll
fi
squash() { dotnet "$cli" "$@"; }
ensure_fashion_mnist
[ -f "$work/fm/base.fvecs" ] || squash dataset fashion-mnist --out "$work/fm"

summary="$work/summary.csv"
echo "seed,filtered,recall_target,predicted,recall,qps,cf,r,build_s,calibration_s,plans" > "$summary"
for seed in $seeds; do
  if [ "${SQUASH_BENCH_REUSE:-0}" != 1 ] || [ ! -d "$work/idx-$seed/versions" ]; then
    rm -rf "$work/idx-$seed"
    squash build --index "$work/idx-$seed" --vectors "$work/fm/base.fvecs" --attributes "$work/fm/base.attributes.jsonl" --seed "$seed" 2>&1 | tail -2
  fi
  build_s=$(python3 -c "import json,glob,sys; m=json.load(open(sorted(glob.glob('$work/idx-$seed/versions/*/manifest.json'))[-1])); print(m['build']['buildSeconds'], m['calibration']['seconds'])")
  for filtered in no yes; do
    extra=()
    gt="$work/fm/groundtruth.ivecs"
    if [ "$filtered" = yes ]; then extra=(--filters "$work/fm/filters.jsonl"); gt="$work/fm/groundtruth.filtered.ivecs"; fi
    out="$work/out-$seed-$filtered"
    squash bench --index "$work/idx-$seed" --queries "$work/fm/query.fvecs" --ground-truth "$gt" --recall "$targets" --h 100 \
      --runs "$runs" --brute-force-queries 0 --out "$out" "${extra[@]}" > "$out.log" 2>&1
    python3 - "$out/bench.csv" "$seed" "$filtered" $build_s >> "$summary" <<'PY'
import csv, sys
path, seed, filtered, build_s, cal_s = sys.argv[1:6]
for row in csv.DictReader(open(path)):
    print(f"{seed},{filtered},{row['recall_target']},{float(row['predicted_recall']):.4f},{float(row['recall']):.4f},{float(row['qps']):.0f},{row['cf']},{row['r']},{build_s},{cal_s},{row.get('plans') or '-'}")
PY
  done
done
column -s, -t "$summary"
