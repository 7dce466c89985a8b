"""Pinned host<->device copy bandwidth: naiad's path (cudaMemcpyAsync on its stream, native
module) against the CUDA runtime's own cudaMemcpy on the same pinned buffers.

    python3 bench/cuda_copies.py [--sizes 1M,16M,256M] [--iters 20]

Needs a GPU and the `_cuda_copy` module (built where the CUDA toolkit header is found).
Prints one JSON line per size with both figures and their ratio (goal: >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import sys

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,16M,256M")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    try:
        from naiad.ext import _cuda_copy as native
    except ImportError:
        print("naiad.ext._cuda_copy is not built here (no CUDA toolkit header at build time)", file=sys.stderr)
        return 2
    count, why, library = native.probe()
    if not count:
        print(f"no GPU: {why}", file=sys.stderr)
        return 2
    for size in (parse_size(s) for s in args.sizes.split(",")):
        f = native.bandwidth(size, args.iters)
        f["library"] = library
        f["h2d_ratio"] = round(f["h2d_naiad_gbps"] / f["h2d_cudamemcpy_gbps"], 3)
        f["d2h_ratio"] = round(f["d2h_naiad_gbps"] / f["d2h_cudamemcpy_gbps"], 3)
        print(json.dumps(f), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
