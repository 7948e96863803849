"""analyze.py WORK [NAME...]: recall@10 against the exact answers and the work per query, per binary and plan (run.sh's output)."""
import json, statistics as st, sys
work, names = sys.argv[1], sys.argv[2:] or ['before', 'after']
for q in ['qshift', 'qall']:
    for kind in ['default', 'cf1.3', 'cf1.82']:
        for name in names:
            got = [json.loads(l) for l in open(f'{work}/ab/{name}.{q}.{kind}.jsonl')]
            exact = [json.loads(l) for l in open(f'{work}/ab/{name}.{q}.exact.jsonl')]
            recall = st.mean(len({r['row'] for r in a['results']} & {r['row'] for r in b['results']}) / len(b['results']) for a, b in zip(got, exact))
            mean = lambda k: st.mean(a['stats'][k] for a in got)
            print(f"{q:6} {kind:8} {name:7} recall@10 {recall:.4f}  partitions {mean('partitionsScanned'):.2f}  vectors considered {mean('vectorsConsidered'):.0f}"
                  f"  (CF {got[0]['stats'].get('centroidFactor')} R {got[0]['stats'].get('rerankFactor')})")
