"""Tokens/s and time to first token through naiad's OpenAI endpoint, with the openai client.

Starts `naiad serve` on examples/models with the OpenAI service on a free loopback port, then
streams `--requests` chat completions of `--max-tokens` from `tiny_generator` one after the
other (`--concurrency` at once) and prints TTFT p50/p99, inter-token latency and tokens/s.
A token is one streamed SSE chunk (tiny_generator sends one word per chunk).

    .venv/bin/python bench/openai_stream.py --requests 50 --max-tokens 64
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, http_port: int, workdir: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "naiad.kernel.main", "serve", "--model-repository", str(ROOT / "examples/models"),
           f"--http-port={http_port}", "--http-address=127.0.0.1", "--allow-grpc=false", "--allow-metrics=false",
           "--allow-openai=true", f"--openai-port={port}", "--openai-address=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("naiad did not become ready")


def one(client: openai.OpenAI, max_tokens: int, i: int) -> tuple[float, float, int]:
    """(time to first token, total time, tokens) of one streamed chat completion."""
    t0 = time.perf_counter()
    first = None
    tokens = 0
    stream = client.chat.completions.create(model="tiny_generator", max_tokens=max_tokens, stream=True,
                                            messages=[{"role": "user", "content": f"prompt number {i}"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            tokens += 1
            if first is None:
                first = time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    port, http_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as work:
        proc = _start(port, http_port, work)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            one(client, 4, -1)  # warm-up: the Python stub's first request
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                results = list(pool.map(lambda i: one(client, args.max_tokens, i), range(args.requests)))
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    ttft = sorted(r[0] * 1000 for r in results)
    tokens = sum(r[2] for r in results)
    itl = [(r[1] - r[0]) / (r[2] - 1) * 1000 for r in results if r[2] > 1]
    print(f"requests {args.requests} x max_tokens {args.max_tokens}, concurrency {args.concurrency}")
    print(f"TTFT ms: p50 {statistics.median(ttft):.2f}  p99 {ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))]:.2f}")
    print(f"inter-token ms: mean {statistics.mean(itl):.3f}")
    print(f"tokens/s: {tokens / wall:.0f} overall, {statistics.mean(r[2] / r[1] for r in results):.0f} per stream")


if __name__ == "__main__":
    main()
