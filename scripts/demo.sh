#!/usr/bin/env bash
# The main job on the embedded default (a folder is the blob store, a local function host runs the
# function app as processes): prepare Fashion-MNIST (or generated data when the Debian package cannot be
# installed), build an index, start `squash serve`, and send queries through the invocation tree,
# printing answers, their stats, recall, latency and cost.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

work=${SQUASH_DEMO_DIR:-data/demo}
port=${SQUASH_DEMO_PORT:-7071}
mkdir -p "$work"
dotnet build src/Squash.Cli -c Release -nologo -clp:ErrorsOnly
squash() { dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll "$@"; }

if ensure_fashion_mnist; then
  [ -f "$work/fashion-mnist/groundtruth.ivecs" ] || squash dataset fashion-mnist --out "$work/fashion-mnist"
  data="$work/fashion-mnist"; name=fashion-mnist
else
  echo "dataset-fashion-mnist unavailable: using generated data" >&2
  [ -f "$work/generated/groundtruth.ivecs" ] || squash dataset generate --n 100000 --dim 128 --seed 7 --out "$work/generated"
  data="$work/generated"; name=generated
fi

# The store holds one folder per index; the function app resolves /api/indexes/{name} to it.
squash build --index "$work/store/$name" --vectors "$data/base.fvecs"

# The deployable function app (Native AOT): what Azure runs, and ~80 ms cold starts per instance here.
bash scripts/publish.sh "$work/functionapp" >/dev/null

# Started directly (not through the shell function) so that $! is the host process itself.
dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll serve --store "dir:$work/store" --app "$work/functionapp" --preload "$name" --port "$port" > "$work/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done

echo "three queries through the function tree (the first starts instances cold):"
squash query --endpoint "http://127.0.0.1:$port" --index "$name" --vectors "$data/query.fvecs" --limit 3
echo
squash bench --endpoint "http://127.0.0.1:$port" --index "$name" --queries "$data/query.fvecs" \
  --ground-truth "$data/groundtruth.ivecs" --limit 300 --tree-shapes 1x1,4x1,4x2 --cold-samples 1 --concurrency 2 --out "$work/bench"
