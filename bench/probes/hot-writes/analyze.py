"""analyze.py WORK NAME...: recall@10 against the exact answers, and the work per query, for each run of run.sh."""
import json, statistics as st, sys
work = sys.argv[1]
for name in sys.argv[2:]:
    for kind in ['default', 'cf1.11', 'cf1.24']:
        for q in ['q7', 'qall']:
            got = [json.loads(l) for l in open(f'{work}/{name}/{q}.{kind}.jsonl')]
            exact = [json.loads(l) for l in open(f'{work}/{name}/{q}.exact.jsonl')]
            recall = st.mean(len({r['row'] for r in a['results']} & {r['row'] for r in b['results']}) / len(b['results']) for a, b in zip(got, exact))
            mean = lambda k: st.mean(a['stats'][k] for a in got)
            plan = f"CF {got[0]['stats'].get('centroidFactor')} R {got[0]['stats'].get('rerankFactor')}" if kind == 'default' else kind
            print(f"{name:8} {kind:8} {q:5} recall@10 {recall:.4f}  partitions {mean('partitionsScanned'):.2f}  vectors considered {mean('vectorsConsidered'):.0f}  re-ranked {mean('reranked'):.0f}  ({plan})")
