#!/usr/bin/env python3
"""Conformance guard: run Triton's QA selection against naiad and fail on any regression.

Reads the kit's results.json and compares it with the committed list of tests that pass on
main (`triton-qa-expected-passes.txt`). A test in the list that does not pass fails the run;
a test that newly passes is reported so that the list can be extended (`--update`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / ".ci" / "triton-qa-expected-passes.txt"


def kit_dir() -> Path | None:
    """The kit lives beside the checkout (../shared/triton-qa) unless TRITON_QA_DIR names it."""
    named = os.environ.get("TRITON_QA_DIR")
    for candidate in ([Path(named)] if named else []) + [REPO.parent / "shared" / "triton-qa"]:
        if (candidate / "run.sh").is_file():
            return candidate
    return None


RERUNS = 2  # a failed case is run again this many times before its tests count as regressed


def run_kit(kit: Path, out: Path, cases: list[str] | None = None) -> dict[str, str]:
    """Outcome per test id; `cases` limits the run to those case ids."""
    env = dict(os.environ, QA_OUT=str(out), QA_INCLUDE_KNOWN_FAIL="1",
               NAIAD_CMD=os.environ.get("NAIAD_CMD", f"{REPO / '.venv/bin/naiad'} serve"),
               QA_TOTAL_TIMEOUT=os.environ.get("QA_TOTAL_TIMEOUT", "1200"))
    subprocess.run(["bash", str(kit / "run.sh"), "naiad", *(cases or [])], cwd=REPO, env=env,
                   check=False)
    results_file = out / "logs" / "results.json"
    if not results_file.is_file():
        sys.exit(f"triton-qa: no results written to {results_file}")
    outcomes: dict[str, str] = {}
    for case in json.loads(results_file.read_text()):
        outcomes.update(case["results"])
    return outcomes


def rerun_failed(kit: Path, tmp: Path, expected: set[str], outcomes: dict[str, str]) -> None:
    """Run the cases of expected tests that failed again, up to RERUNS times. Some of Triton's
    tests race a client-side sleep against the server (Triton itself fails them now and then)."""
    for attempt in range(1, RERUNS + 1):
        failed = sorted(n for n in expected if outcomes.get(n) != "passed")
        if not failed:
            return
        cases = sorted({n.split("::")[0] for n in failed})
        print(f"triton-qa: rerun {attempt} of {', '.join(cases)}")
        for name, outcome in run_kit(kit, tmp / f"run{attempt}", cases).items():
            if outcome == "passed" and outcomes.get(name) != "passed":
                print(f"triton-qa: flaky, passed on rerun {attempt}: {name}")
                outcomes[name] = outcome


def read_expected() -> set[str]:
    if not EXPECTED.is_file():
        return set()
    lines = (line.split("#")[0].strip() for line in EXPECTED.read_text().splitlines())
    return {line for line in lines if line}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true",
                    help="rewrite the expected list with every test that passes now")
    args = ap.parse_args()
    kit = kit_dir()
    if kit is None:
        print("triton-qa: kit not found beside the checkout; conformance guard skipped")
        return 0
    expected = read_expected()
    tmp = Path(tempfile.mkdtemp(prefix="naiad-qa-"))  # kept: the logs explain a regression
    outcomes = run_kit(kit, tmp / "run0")
    if not args.update:
        rerun_failed(kit, tmp, expected, outcomes)
    passing = {name for name, outcome in outcomes.items() if outcome == "passed"}
    if args.update:
        old = EXPECTED.read_text().splitlines() if EXPECTED.is_file() else []
        header = [line for line in old if line.startswith("#")] or [
            "# Triton QA tests that pass on naiad (kept by .ci/triton_qa_guard.py --update)"]
        EXPECTED.write_text("".join(f"{line}\n" for line in header + sorted(passing)))
        print(f"triton-qa: {len(passing)} expected passes written to {EXPECTED.name}")
        return 0
    regressed = sorted(expected - passing)
    newly = sorted(passing - expected)
    for name in newly:
        print(f"triton-qa: newly passing (add with --update): {name}")
    for name in regressed:
        print(f"triton-qa: REGRESSED: {name} ({outcomes.get(name, 'not run')})")
    print(f"triton-qa: {len(passing)} of {len(outcomes)} pass; "
          f"{len(regressed)} regressed against {EXPECTED.name}; logs in {tmp}")
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
