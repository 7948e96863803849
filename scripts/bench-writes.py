#!/usr/bin/env python3
"""Write-path figures of issue #15 against a running `squash serve` (see scripts/bench-writes.sh).

Prints: write acknowledgement p50/p99 (sequential batches), sustained write throughput (concurrent batches),
and query p50 eventual vs strong with the tail those writes left. Bounded: a fixed number of requests, each with
a timeout. Usage: bench-writes.py URL INDEX DIMS [--batches 200] [--batch 100] [--throughput-batches 20]
[--throughput-batch 1000] [--concurrency 4] [--queries 200] [--seed 7]
"""
import argparse, json, random, statistics, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

p = argparse.ArgumentParser()
p.add_argument("url"); p.add_argument("index"); p.add_argument("dims", type=int)
p.add_argument("--batches", type=int, default=200); p.add_argument("--batch", type=int, default=100)
p.add_argument("--throughput-batches", type=int, default=20); p.add_argument("--throughput-batch", type=int, default=1000)
p.add_argument("--concurrency", type=int, default=4); p.add_argument("--queries", type=int, default=200)
p.add_argument("--seed", type=int, default=7)
a = p.parse_args()
rng = random.Random(a.seed)

def post(path, body):
    data = json.dumps(body).encode()
    req = urllib.request.Request(a.url + path, data=data, headers={"Content-Type": "application/json"}, method="POST")
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        payload = json.load(r)
    return time.perf_counter() - t, payload

def vec():
    return [round(rng.gauss(0, 1), 5) for _ in range(a.dims)]

def batch(n, tag):
    return {"upserts": [{"id": f"{tag}-{i}", "vector": vec()} for i in range(n)]}

def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]

acks = []
for b in range(a.batches):
    dt, _ = post(f"/api/indexes/{a.index}/vectors", batch(a.batch, f"ack{b}"))
    acks.append(dt * 1000)
print(f"ack latency ({a.batches} sequential batches of {a.batch}): p50 {pct(acks, .5):.1f} ms, p99 {pct(acks, .99):.1f} ms")

bodies = [batch(a.throughput_batch, f"tp{b}") for b in range(a.throughput_batches)]
t0 = time.perf_counter()
with ThreadPoolExecutor(a.concurrency) as pool:
    list(pool.map(lambda body: post(f"/api/indexes/{a.index}/vectors", body), bodies))
elapsed = time.perf_counter() - t0
total = a.throughput_batches * a.throughput_batch
print(f"write throughput ({a.throughput_batches} batches of {a.throughput_batch}, concurrency {a.concurrency}): {total / elapsed:,.0f} vectors/s")

for consistency in ("eventual", "strong", "eventual", "strong"):
    times, tail = [], None
    for _ in range(a.queries):
        dt, ans = post(f"/api/indexes/{a.index}/query", {"vector": vec(), "k": 10, "options": {"consistency": consistency, "depth": 0}})
        times.append(dt * 1000); tail = ans.get("tailItems")
    print(f"query {consistency:8s} ({a.queries}, depth 0, tail items {tail}): p50 {pct(times, .5):.2f} ms, p99 {pct(times, .99):.2f} ms")
