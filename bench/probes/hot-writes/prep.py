"""prep.py FASHION_MNIST_DIR WORK: WORK/hot.fvecs = two noisy copies (uniform +-8) of every class-7 base image (12,000
vectors, a hot spot), WORK/q7.fvecs = the 1,000 class-7 test queries, WORK/qall.fvecs = the first 1,000 test queries."""
import struct, random, array
import sys, os
src=sys.argv[1].rstrip('/')+'/'; out=sys.argv[2]; os.makedirs(out, exist_ok=True)
def read_fvecs(p):
    out=[]
    with open(p,'rb') as f:
        b=f.read()
    i=0
    while i<len(b):
        d=struct.unpack_from('<i',b,i)[0]; i+=4
        a=array.array('f'); a.frombytes(b[i:i+4*d]); i+=4*d; out.append(a)
    return out
def read_ivecs(p):
    out=[]
    with open(p,'rb') as f: b=f.read()
    i=0
    while i<len(b):
        d=struct.unpack_from('<i',b,i)[0]; i+=4
        out.append(struct.unpack_from('<%di'%d,b,i)); i+=4*d
    return out
def write_fvecs(p, rows):
    with open(p,'wb') as f:
        for r in rows:
            f.write(struct.pack('<i',len(r))); f.write(r.tobytes())
base=read_fvecs(src+'base.fvecs'); labels=[x[0] for x in read_ivecs(src+'base.labels.ivecs')]
q=read_fvecs(src+'query.fvecs'); ql=[x[0] for x in read_ivecs(src+'query.labels.ivecs')]
rng=random.Random(17)
hot=[]
for copy in range(2):
    for r,l in zip(base,labels):
        if l==7:
            hot.append(array.array('f',[max(0.0,min(255.0,v+rng.uniform(-8,8))) for v in r]))
write_fvecs(out+'/hot.fvecs',hot)
write_fvecs(out+'/q7.fvecs',[r for r,l in zip(q,ql) if l==7])
write_fvecs(out+'/qall.fvecs',q[:1000])
print(len(hot), sum(1 for l in ql if l==7))
