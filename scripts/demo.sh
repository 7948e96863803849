#!/usr/bin/env bash
# The main job on the embedded default (a folder is the blob store): prepare Fashion-MNIST (or generated
# data when the Debian package cannot be installed), build an index, query it, and print recall.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

work=${SQUASH_DEMO_DIR:-data/demo}
mkdir -p "$work"
dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
squash() { dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll "$@"; }

if ensure_fashion_mnist; then
  [ -f "$work/fashion-mnist/groundtruth.ivecs" ] || squash dataset fashion-mnist --out "$work/fashion-mnist"
  data="$work/fashion-mnist"
else
  echo "dataset-fashion-mnist unavailable: using generated data" >&2
  [ -f "$work/generated/groundtruth.ivecs" ] || squash dataset generate --n 100000 --dim 128 --seed 7 --out "$work/generated"
  data="$work/generated"
fi

squash build --index "$work/index" --vectors "$data/base.fvecs"
echo "first three queries (id:distance):"
squash query --index "$work/index" --vectors "$data/query.fvecs" --limit 3
squash bench --index "$work/index" --queries "$data/query.fvecs" --ground-truth "$data/groundtruth.ivecs" \
  --cf 1.3 --h 100 --r 2 --runs 1 --limit 2000 --brute-force-queries 50 --out "$work/bench"
