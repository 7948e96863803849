"""prep.py FASHION_MNIST_DIR WORK: the write sets and queries of the drift probe.
WORK/replace.fvecs: 36,000 base images (shuffled) with uniform +-4 noise, written over ids 0..35,999 (the data's own distribution);
WORK/shift.fvecs: 8,000 random base images inverted (255 - v), written as new ids 60,000.. (a region no partition was fitted to);
WORK/qshift.fvecs: the first 1,000 test images inverted; WORK/qall.fvecs: the first 1,000 test images."""
import array, os, random, struct, sys
src, out = sys.argv[1].rstrip('/') + '/', sys.argv[2]
os.makedirs(out, exist_ok=True)
def read_fvecs(p):
    rows, b, i = [], open(p, 'rb').read(), 0
    while i < len(b):
        d = struct.unpack_from('<i', b, i)[0]; i += 4
        a = array.array('f'); a.frombytes(b[i:i + 4 * d]); i += 4 * d; rows.append(a)
    return rows
def write_fvecs(p, rows):
    with open(p, 'wb') as f:
        for r in rows: f.write(struct.pack('<i', len(r))); f.write(r.tobytes())
base, q = read_fvecs(src + 'base.fvecs'), read_fvecs(src + 'query.fvecs')
rng = random.Random(5)
perm = list(range(len(base))); rng.shuffle(perm)
write_fvecs(out + '/replace.fvecs', [array.array('f', [max(0.0, min(255.0, v + rng.uniform(-4, 4))) for v in base[perm[i]]]) for i in range(36000)])
rng = random.Random(9)
write_fvecs(out + '/shift.fvecs', [array.array('f', [255.0 - v for v in base[i]]) for i in rng.sample(range(len(base)), 8000)])
write_fvecs(out + '/qshift.fvecs', [array.array('f', [255.0 - v for v in r]) for r in q[:1000]])
write_fvecs(out + '/qall.fvecs', q[:1000])
