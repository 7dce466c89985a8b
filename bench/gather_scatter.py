"""Gather of request tensors into one batch: naiad.ext native vs its numpy twin vs numpy.concatenate.

Run: .venv/bin/python bench/gather_scatter.py  (prints median microseconds per call)
"""
import statistics, timeit
import numpy as np
from naiad.ext import _batching as native, batching_py as twin, _host_buffers as hb

def median_us(fn, number, repeat=31):
    times = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e6

cases = {
    "32 x (1x1024) f32": [np.random.rand(1, 1024).astype(np.float32) for _ in range(32)],
    "8 x 1 MiB f32": [np.random.rand(256, 1024).astype(np.float32) for _ in range(8)],
}
pool = hb.HostBufferPool()
for name, parts in cases.items():
    number = 2000 if "1024)" in name else 100
    nbytes = sum(p.nbytes for p in parts)
    buf = pool.acquire(nbytes)
    out_arr = np.empty((sum(len(p) for p in parts),) + parts[0].shape[1:], np.float32)
    rows = [
        ("native gather", lambda: native.gather(parts)),
        ("twin gather", lambda: twin.gather(parts)),
        ("numpy.concatenate", lambda: np.concatenate(parts)),
        ("native gather(out=HostBuffer)", lambda: native.gather(parts, out=buf)),
        ("twin gather(out=HostBuffer)", lambda: twin.gather(parts, out=buf)),
        ("numpy.concatenate(out=ndarray)", lambda: np.concatenate(parts, out=out_arr)),
    ]
    print(name)
    for label, fn in rows:
        print(f"  {label:32s} {median_us(fn, number):9.2f} us")
