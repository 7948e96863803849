#!/usr/bin/env bash
# run.sh FASHION_MNIST_DIR WORK NAME ROOT: with the squash of checkout ROOT (built Release), build Fashion-MNIST into a
# folder store, upsert WORK/hot.fvecs (from prep.py) through `squash serve`'s write API, ingest, then answer WORK/q7.fvecs
# and WORK/qall.fvecs at the default target, exactly, and at two fixed plans. Results in WORK/NAME/.
set -euo pipefail
src=$1 work=$2 name=$3 root=$4
S="dotnet $root/src/Squash.Cli/bin/Release/net10.0/squash.dll"
out=$work/$name; store=$out/store; mkdir -p "$store"
$S build --store "dir:$store" --index fm --vectors "$src/base.fvecs" > "$out/build.log" 2>&1
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
(cd "$root" && exec $S serve --store "dir:$store" --port "$port" --preload fm > "$out/serve.log" 2>&1) &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 1; done
$S upsert --endpoint "http://127.0.0.1:$port" --index fm --vectors "$work/hot.fvecs" --first-id 60000 > "$out/upsert.log" 2>&1
kill $serve; wait $serve || true
$S ingest --store "dir:$store" --index fm > "$out/ingest.log" 2>&1
$S inspect --store "dir:$store" --index fm --partitions > "$out/inspect.txt" 2>&1
for q in q7 qall; do
  $S query --store "dir:$store" --index fm --vectors "$work/$q.fvecs" --json > "$out/$q.default.jsonl"
  $S query --store "dir:$store" --index fm --vectors "$work/$q.fvecs" --json --exact > "$out/$q.exact.jsonl"
  for plan in "1.11 4" "1.24 2"; do
    set -- $plan
    $S query --store "dir:$store" --index fm --vectors "$work/$q.fvecs" --json --cf "$1" --r "$2" > "$out/$q.cf$1.jsonl"
  done
done
