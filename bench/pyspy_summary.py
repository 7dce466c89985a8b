"""Summarise py-spy's collapsed stacks (`py-spy record -f raw`): where the samples went.

Pure (standard library): self time by function (the frame on top of the stack), inclusive time by
function (anywhere on the stack, counted once per sample), and samples per process.
"""

from __future__ import annotations

import re
from collections import Counter

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` → `func (file.py)`; other frames unchanged."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    parts = path.replace("\\", "/").split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})"


def process_label(frame: str) -> str:
    """`process 123:"/venv/bin/python -m naiad.kernel.main serve ..."` → `123 naiad.kernel.main serve ...`."""
    pid, _, cmd = frame[len("process "):].partition(":")
    cmd = cmd.strip().strip('"')
    cmd = re.sub(r"^\S*python[0-9.]*\s+(-m\s+)?", "", cmd)
    cmd = re.sub(r"/\S*/(bench|examples)/", r"\1/", cmd)  # no machine paths in reports
    return f"{pid} {cmd}"[:70]


def summarise_collapsed(text: str, top: int = 15) -> dict:
    """Self and inclusive samples per function, and per process. The trunk every stack of a
    process passes through (runpy, main, the event loop's run) is left out of the inclusive table,
    which would otherwise start with it."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    procs: Counter = Counter()
    stacks_by_root: dict[tuple[str, str], list[list[str]]] = {}
    total = 0
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        stack, n = m.group(1), int(m.group(2))
        frames = [f for f in stack.split(";") if f]
        proc = ""
        while frames and frames[0].startswith("process "):
            proc = process_label(frames[0])   # with --subprocesses: parent;child;... — keep the last
            frames = frames[1:]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        procs[proc] += n
        role = proc.split(" ")[1] if " " in proc else proc
        names = [f"{role}: {frame_name(f)}" if role else frame_name(f) for f in frames]
        self_c[names[-1]] += n
        for name in set(names):
            incl[name] += n
        stacks_by_root.setdefault((proc, names[0]), []).append(names)
    # The trunk: the frames all stacks from one root share (runpy, main, the loop's run_forever),
    # found as their longest common prefix, the leaf excepted. Coroutine-only stacks (py-spy shows
    # some without their caller chain) have other roots and keep their frames.
    trunk = set()
    for stacks in stacks_by_root.values():
        prefix = stacks[0][:-1]
        for st in stacks[1:]:
            k = 0
            while k < len(prefix) and k < len(st) - 1 and st[k] == prefix[k]:
                k += 1
            prefix = prefix[:k]
        trunk.update(prefix)
    for name in trunk:
        incl.pop(name, None)

    def table(c: Counter) -> list[dict]:
        return [{"function": k, "samples": v, "share": v / total if total else 0.0} for k, v in c.most_common(top)]

    out = {"samples": total, "self": table(self_c), "inclusive": table(incl),
           "processes": [{"process": k, "samples": v, "share": v / total if total else 0.0}
                         for k, v in procs.most_common()]}
    out["summary_md"] = summary_markdown(out)
    return out


def summary_markdown(s: dict, top: int = 12) -> str:
    lines = [f"{s['samples']} samples of on-CPU Python stacks (py-spy, all of naiad's processes)."]
    if s["processes"]:
        lines += ["", "| process | share |", "| --- | ---: |"]
        lines += [f"| `{p['process']}` | {p['share']:.0%} |" for p in s["processes"]]
    lines += ["", "| self time (top of stack) | share |", "| --- | ---: |"]
    lines += [f"| `{r['function']}` | {r['share']:.1%} |" for r in s["self"][:top]]
    lines += ["", "| inclusive time | share |", "| --- | ---: |"]
    lines += [f"| `{r['function']}` | {r['share']:.1%} |" for r in s["inclusive"][:top]]
    return "\n".join(lines)
