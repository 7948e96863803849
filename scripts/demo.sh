#!/usr/bin/env bash
# The main job, as the service is used: Azurite (started as the tests start it) is the blob store and the queue, and a
# local function host (`squash serve --store azure:…`) runs the function app as processes, its builder pool taking
# index-build tasks from the queues. Prepares Fashion-MNIST (or generated data when the Debian package cannot be
# installed), builds the index through the queue (`squash build --endpoint`: upload, submit, follow), then sends
# queries through the invocation tree, printing answers, their stats, recall, latency and cost.
# SQUASH_DEMO_STORE=dir runs the earlier path instead: a folder store and an index built in this process (it is also
# what happens when Azurite cannot be installed, which needs npm).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

work=${SQUASH_DEMO_DIR:-data/demo}
port=${SQUASH_DEMO_PORT:-7071}
mode=${SQUASH_DEMO_STORE:-queue}
case "$mode" in queue|dir) ;; *) echo "error: SQUASH_DEMO_STORE must be queue or dir, got '$mode'" >&2; exit 1 ;; esac
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

# The deployable function app (Native AOT): what Azure runs, and ~80 ms cold starts per instance here.
bash scripts/publish.sh "$work/functionapp" >/dev/null

serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null || true; fi
  stop_azurite
}
trap cleanup EXIT
if [ "$mode" = queue ] && ! { ensure_azurite && start_azurite; }; then
  echo "Azurite could not be started (it needs npm): building in this process into a folder store instead" >&2
  mode=dir
fi
if [ "$mode" = queue ]; then
  # Azurite's blob and queue endpoints on free loopback ports, with fresh storage that goes when the demo ends.
  store="azure:$SQUASH_TEST_AZURITE"
else
  # The store holds one folder per index; the function app resolves /api/indexes/{name} to it.
  squash build --index "$work/store/$name" --vectors "$data/base.fvecs"
  store="dir:$work/store"
fi

# Started directly (not through the shell function) so that $! is the host process itself.
dotnet src/Squash.Cli/bin/Release/net10.0/squash.dll serve --store "$store" --app "$work/functionapp" --preload "$name" --port "$port" > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 150); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
kill -0 "$serve_pid" 2>/dev/null || { echo "error: squash serve exited (log: $work/serve.log):" >&2; cat "$work/serve.log" >&2; exit 1; }
endpoint="http://127.0.0.1:$port"

if [ "$mode" = queue ]; then
  echo "building $name through the queue: upload into Azurite, then train → assign → encode → publish on the builder pool:"
  started=$(date +%s%N)
  squash build --endpoint "$endpoint" --index "$name" --vectors "$data/base.fvecs" --store "$store"
  echo "the index was built through the queue in $(awk "BEGIN { printf \"%.1f\", ($(date +%s%N) - $started) / 1e9 }") s (upload, submission and the four stages)"
  echo
fi

echo "three queries through the function tree (the first starts instances cold):"
squash query --endpoint "$endpoint" --index "$name" --vectors "$data/query.fvecs" --limit 3
echo
squash bench --endpoint "$endpoint" --index "$name" --queries "$data/query.fvecs" \
  --ground-truth "$data/groundtruth.ivecs" --limit 300 --tree-shapes 1x1,4x1,4x2 --cold-samples 1 --concurrency 2 --out "$work/bench"
