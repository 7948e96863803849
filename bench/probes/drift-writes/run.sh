#!/usr/bin/env bash
# run.sh FASHION_MNIST_DIR WORK BEFORE_BIN AFTER_BIN: BEFORE_BIN and AFTER_BIN are the folders of two Release builds of
# squash.dll. Builds Fashion-MNIST into a folder store with AFTER_BIN; for each write set of prep.py, upserts it once
# through `squash serve`, then ingests a copy with each binary (twice, alternating); on the shifted set, answers
# WORK/qshift.fvecs and WORK/qall.fvecs exactly, at the default target and at CF 1.3 / 1.82, R 4. Results in WORK/ab/.
set -euo pipefail
src=$1 w=$2 before=$3 after=$4
A="dotnet $after/squash.dll"
rm -rf "$w/ab"; mkdir -p "$w/ab"
$A build --store "dir:$w/ab/base" --index fm --vectors "$src/base.fvecs" > "$w/ab/build.log" 2>&1
for set in replace:0 shift:60000; do
  name=${set%%:*}; first=${set##*:}
  cp -r "$w/ab/base" "$w/ab/$name-pre"
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  $A serve --store "dir:$w/ab/$name-pre" --port "$port" --preload fm > "$w/ab/$name.serve.log" 2>&1 &
  serve=$!
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 1; done
  $A upsert --endpoint "http://127.0.0.1:$port" --index fm --vectors "$w/$name.fvecs" --first-id "$first" > "$w/ab/$name.upsert.log" 2>&1
  kill $serve; wait $serve || true
  for r in 1 2; do for v in before after; do
    bin=$before; [ $v = after ] && bin=$after
    rm -rf "$w/ab/$name-$v"; cp -r "$w/ab/$name-pre" "$w/ab/$name-$v"
    echo "$name $r $v load $(cut -d' ' -f1-3 /proc/loadavg)"
    dotnet "$bin/squash.dll" ingest --store "dir:$w/ab/$name-$v" --index fm 2>&1 | tail -1
  done; done
done
for v in before after; do
  bin=$before; [ $v = after ] && bin=$after
  for q in qshift qall; do
    S="dotnet $bin/squash.dll query --store dir:$w/ab/shift-$v --index fm --vectors $w/$q.fvecs --json"
    $S --exact > "$w/ab/$v.$q.exact.jsonl"
    $S > "$w/ab/$v.$q.default.jsonl"
    for cf in 1.3 1.82; do $S --cf $cf --r 4 > "$w/ab/$v.$q.cf$cf.jsonl"; done
  done
done
