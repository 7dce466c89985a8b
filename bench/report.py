"""Results → Markdown (every naiad figure beside its peer as a ratio) and a PNG plot.

`render_markdown` and `ratio` are pure (standard library) so the test suite can check them;
`plot` imports matplotlib when called (it lives in the bench venv, not naiad's).
"""

from __future__ import annotations

from collections import defaultdict

PEER_LABEL = {"triton": "Triton", "mlserver": "MLServer"}


def ratio(a: float | None, b: float | None) -> str:
    """a/b as `1.23×`, or `–` when either side is missing or b is zero."""
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x / 1000:.2f}k" if x >= 1000 else f"{x:.0f}"


def fmt_us(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x / 1000:.2f} ms" if x >= 10000 else f"{x:.0f} µs"


def fmt_num(x: float | None, digits: int = 0, unit: str = "") -> str:
    return "–" if x is None else f"{x:.{digits}f}{unit}"


def index_rows(rows: list[dict]) -> dict:
    """(server, workload, protocol, concurrency) → row, errors left out."""
    out = {}
    for r in rows:
        out[(r["server"], r["workload"], r["protocol"], r["concurrency"])] = r
    return out


def _get(row: dict | None, key: str):
    if row is None or row.get("error"):
        return None
    return row.get(key)


def _cell_err(row: dict | None, text: str) -> str:
    if row is not None and row.get("error"):
        return "error"
    return text


def _keys(rows: list[dict], protocols: tuple[str, ...]) -> list[tuple[str, str, int]]:
    seen = []
    for r in rows:
        k = (r["workload"], r["protocol"], r["concurrency"])
        if r["protocol"] in protocols and k not in seen:
            seen.append(k)
    order = {p: i for i, p in enumerate(protocols)}
    wl_order = {}
    for r in rows:
        wl_order.setdefault(r["workload"], len(wl_order))
    return sorted(seen, key=lambda k: (wl_order[k[0]], order[k[1]], k[2]))


def peer_table(rows: list[dict], peer: str, protocols: tuple[str, ...]) -> list[str]:
    idx = index_rows(rows)
    label = PEER_LABEL.get(peer, peer)
    out = [f"| workload | protocol | c | naiad inf/s | {label} inf/s | naiad/{label} | naiad p99 | {label} p99 "
           f"| naiad/{label} p99 | naiad CPU/inf | {label} CPU/inf | naiad/{label} CPU | other cores (naiad, {label}) |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    any_row = False
    for wl, proto, c in _keys(rows, protocols):
        n = idx.get(("naiad", wl, proto, c))
        p = idx.get((peer, wl, proto, c))
        if p is None:
            continue
        any_row = True
        out.append("| " + " | ".join([
            wl, proto, str(c),
            _cell_err(n, fmt_rate(_get(n, "throughput"))), _cell_err(p, fmt_rate(_get(p, "throughput"))),
            ratio(_get(n, "throughput"), _get(p, "throughput")),
            _cell_err(n, fmt_us(_get(n, "p99_us"))), _cell_err(p, fmt_us(_get(p, "p99_us"))),
            ratio(_get(n, "p99_us"), _get(p, "p99_us")),
            _cell_err(n, fmt_us(_get(n, "server_cpu_per_inf_us"))), _cell_err(p, fmt_us(_get(p, "server_cpu_per_inf_us"))),
            ratio(_get(n, "server_cpu_per_inf_us"), _get(p, "server_cpu_per_inf_us")),
            f"{fmt_num(_get(n, 'other_cores'), 2)}, {fmt_num(_get(p, 'other_cores'), 2)}",
        ]) + " |")
    return out if any_row else []


def floor_table(rows: list[dict], floors: list[str]) -> list[str]:
    idx = index_rows(rows)
    out = ["| workload | protocol | c | floor | naiad inf/s | floor inf/s | naiad/floor | naiad p99 | floor p99 "
           "| naiad/floor p99 | naiad CPU/inf | floor CPU/inf | naiad/floor CPU |",
           "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    any_row = False
    for wl, proto, c in _keys(rows, ("http", "grpc")):
        n = idx.get(("naiad", wl, proto, c))
        for f in floors:
            p = idx.get((f, wl, proto, c))
            if p is None:
                continue
            any_row = True
            out.append("| " + " | ".join([
                wl, proto, str(c), f,
                _cell_err(n, fmt_rate(_get(n, "throughput"))), _cell_err(p, fmt_rate(_get(p, "throughput"))),
                ratio(_get(n, "throughput"), _get(p, "throughput")),
                _cell_err(n, fmt_us(_get(n, "p99_us"))), _cell_err(p, fmt_us(_get(p, "p99_us"))),
                ratio(_get(n, "p99_us"), _get(p, "p99_us")),
                _cell_err(n, fmt_us(_get(n, "server_cpu_per_inf_us"))),
                _cell_err(p, fmt_us(_get(p, "server_cpu_per_inf_us"))),
                ratio(_get(n, "server_cpu_per_inf_us"), _get(p, "server_cpu_per_inf_us")),
            ]) + " |")
    return out if any_row else []


def json_table(rows: list[dict]) -> list[str]:
    idx = index_rows(rows)
    peers = [s for s in ("triton", "mlserver") if any(r["server"] == s and r["protocol"] == "http-json" for r in rows)]
    head = ["workload", "c", "naiad inf/s"] + [f"{PEER_LABEL[p]} inf/s" for p in peers] + \
           [f"naiad/{PEER_LABEL[p]}" for p in peers] + ["naiad p99"] + [f"{PEER_LABEL[p]} p99" for p in peers] + \
           [f"naiad/{PEER_LABEL[p]} p99" for p in peers] + ["naiad CPU/inf"] + \
           [f"{PEER_LABEL[p]} CPU/inf" for p in peers] + [f"naiad/{PEER_LABEL[p]} CPU" for p in peers]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    any_row = False
    for wl, proto, c in _keys(rows, ("http-json",)):
        any_row = True
        n = idx.get(("naiad", wl, proto, c))
        ps = [idx.get((p, wl, proto, c)) for p in peers]
        cells = [wl, str(c), _cell_err(n, fmt_rate(_get(n, "throughput")))]
        cells += [_cell_err(p, fmt_rate(_get(p, "throughput"))) for p in ps]
        cells += [ratio(_get(n, "throughput"), _get(p, "throughput")) for p in ps]
        cells += [_cell_err(n, fmt_us(_get(n, "p99_us")))] + [_cell_err(p, fmt_us(_get(p, "p99_us"))) for p in ps]
        cells += [ratio(_get(n, "p99_us"), _get(p, "p99_us")) for p in ps]
        cells += [_cell_err(n, fmt_us(_get(n, "server_cpu_per_inf_us")))]
        cells += [_cell_err(p, fmt_us(_get(p, "server_cpu_per_inf_us"))) for p in ps]
        cells += [ratio(_get(n, "server_cpu_per_inf_us"), _get(p, "server_cpu_per_inf_us")) for p in ps]
        out.append("| " + " | ".join(cells) + " |")
    return out if any_row else []


def server_table(servers: dict) -> list[str]:
    naiad = servers.get("naiad", {})
    out = ["| server | start to ready | RSS after load | PSS after load | processes | naiad/server start | naiad/server RSS |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in servers.items():
        if s.get("error") and s.get("start_s") is None:
            out.append(f"| {name} | error | – | – | – | – | – |")
            continue
        mine = name == "naiad"
        out.append("| " + " | ".join([
            name, fmt_num(s.get("start_s"), 2, " s"), fmt_num(s.get("rss_mib"), 0, " MiB"),
            fmt_num(s.get("pss_mib"), 0, " MiB"), fmt_num(s.get("processes"), 0),
            "" if mine else ratio(naiad.get("start_s"), s.get("start_s")),
            "" if mine else ratio(naiad.get("rss_mib"), s.get("rss_mib")),
        ]) + " |")
    return out


def all_rows_table(rows: list[dict]) -> list[str]:
    out = ["| server | workload | protocol | c | inf/s | p50 | p99 | server CPU/inf | client CPU/inf | other cores | note |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        note = (r.get("error") or "").splitlines()[0][:80] if r.get("error") else r.get("note", "")
        out.append("| " + " | ".join([
            r["server"], r["workload"], r["protocol"], str(r["concurrency"]),
            fmt_rate(_get(r, "throughput")), fmt_us(_get(r, "p50_us")), fmt_us(_get(r, "p99_us")),
            fmt_us(_get(r, "server_cpu_per_inf_us")), fmt_us(_get(r, "client_cpu_per_inf_us")),
            fmt_num(_get(r, "other_cores"), 2), note.replace("|", "/"),
        ]) + " |")
    return out


def split_table(rows: list[dict]) -> list[str]:
    """Server CPU per inference split by process (server, stubs, workers) and, for the server process,
    by thread: its main thread (naiad: the Python event loop) and the others (naiad: native threads)."""
    out = ["| server | workload | protocol | c | CPU/inf by process |", "| --- | --- | --- | ---: | --- |"]
    any_row = False
    for r in rows:
        split = r.get("server_cpu_per_inf_us_by_process") or {}
        if r.get("error") or len(split) < 2:
            continue
        any_row = True
        cells = ", ".join(f"{k} {v:.0f} µs" for k, v in sorted(split.items(), key=lambda kv: -kv[1]))
        out.append(f"| {r['server']} | {r['workload']} | {r['protocol']} | {r['concurrency']} | {cells} |")
    return out if any_row else []


def render_markdown(results: dict) -> str:
    rows = results.get("rows", [])
    servers = results.get("servers", {})
    s = results.get("settings", {})
    lines = [f"# naiad benchmark — {results.get('started', '')} ({results.get('mode', '')})", ""]
    m = results.get("machine", {})
    lines += [f"Machine: {m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}), {m.get('memory_gib', '?')} GiB; "
              f"server and client share it. perf_analyzer: {s.get('passes', 3)} windows of "
              f"{s.get('window_ms', '?')} ms per row, binary tensors, synchronous requests; wrk: "
              f"{s.get('wrk_seconds', '?')} s per row, JSON bodies. Versions: "
              + ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items()) + ".", "",
              "Ratios are naiad/peer: above 1× is better for inf/s, below 1× is better for p99 and CPU. "
              "CPU/inf is user+system CPU of the server's whole process tree (stubs, workers) over the "
              "measured windows divided by the inferences served; *other cores* is the CPU that "
              "processes other than the server and the client took meanwhile (noise on a shared machine).", ""]
    t = peer_table(rows, "triton", ("http", "grpc"))
    if t:
        lines += ["## naiad and Triton through perf_analyzer", ""] + t + [""]
    floors = [n for n in ("floor-canned", "floor-aiohttp", "floor-protocol", "floor-grpc")
              if any(r["server"] == n for r in rows)]
    t = floor_table(rows, floors)
    if t:
        lines += ["## naiad and the transport floors", "",
                  "Floors do no inference: " + "; ".join(
                      f"**{f}**: {results.get('descriptions', {}).get(f, '')}" for f in floors) + ".", ""] + t + [""]
    t = json_table(rows)
    if t:
        lines += ["## JSON bodies through wrk (naiad, Triton, MLServer)", ""] + t + [""]
    if servers:
        lines += ["## Start-up and memory", "",
                  "Start to ready: from spawning the process to the first 200 on /v2/health/ready. "
                  "RSS and PSS: summed over the server's process tree after its last load run.", ""]
        lines += server_table(servers) + [""]
    prof = results.get("profile")
    if prof:
        lines += ["## Where naiad spends its time (py-spy)", "", prof.get("summary_md", ""), ""]
    t = split_table(rows)
    if t:
        lines += ["## Server CPU per inference by process and thread", ""] + t + [""]
    if rows:
        lines += ["## All measurements", ""] + all_rows_table(rows) + [""]
    errors = [f"- {n}: {s['error'].splitlines()[0]}" for n, s in servers.items() if s.get("error")]
    if errors:
        lines += ["## Problems", ""] + errors + [""]
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    """Throughput and p99 against concurrency, a line per server, one row per workload/protocol."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in results.get("rows", []):
        if r.get("error") or r.get("throughput") is None:
            continue
        groups[(r["workload"], r["protocol"])][r["server"]].append(r)
    if not groups:
        return
    keys = list(groups)
    colours = {"naiad": "tab:red", "triton": "tab:green", "mlserver": "tab:purple", "floor-canned": "tab:gray",
               "floor-aiohttp": "tab:blue", "floor-protocol": "tab:orange", "floor-grpc": "tab:cyan"}
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 3.2 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        ax_t, ax_p = axes[i]
        for server, rs in sorted(groups[key].items()):
            rs = sorted(rs, key=lambda r: r["concurrency"])
            cs = [r["concurrency"] for r in rs]
            style = dict(marker="o", linewidth=2.5 if server == "naiad" else 1.2, color=colours.get(server),
                         linestyle=":" if server.startswith("floor") else "-")
            ax_t.plot(cs, [r["throughput"] for r in rs], label=server, **style)
            ax_p.plot(cs, [r.get("p99_us", 0) / 1000 for r in rs], label=server, **style)
        conc = sorted({r["concurrency"] for rs in groups[key].values() for r in rs})
        ax_p.set_yscale("log")
        for ax, what in ((ax_t, "inferences/s"), (ax_p, "p99 latency (ms, log)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(conc, [str(c) for c in conc])
            ax.set_xlim(min(conc) / 1.5, max(conc) * 1.5)
            ax.set_xlabel("concurrency")
            ax.set_ylabel(what)
            ax.set_title(f"{key[0]} · {key[1]}", fontsize=9)
            ax.grid(True, alpha=0.3)
        ax_t.legend(fontsize=7)
    fig.suptitle(f"naiad benchmark {results.get('started', '')} ({results.get('mode', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
