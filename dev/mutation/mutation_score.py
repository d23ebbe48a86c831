"""The mutation score of the last mutmut run, per file and overall (run in the staging folder).

score = killed / (killed + survived), where
  killed   = a selected test failed (timeouts and crashes count as killed: the mutant did not pass),
  survived = every selected test passed, or no selected test runs the mutated function ("no tests"),
and mutants listed in the equivalents file (``name  reason``, one a line, ``#`` comments) are left out:
they cannot change any behaviour, so no test can kill them. An equivalent mutant that a test kills is
reported, because then it was not equivalent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout",
          255: "timeout", -11: "crash", -9: "crash"}  # fmt: skip
SURVIVED = {0: "survived", 5: "no tests", 33: "no tests"}


def read_equivalents(path: Path) -> dict[str, str]:
    equivalents = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                equivalents[name] = reason.strip()
    return equivalents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equivalents", type=Path, default=Path("mutation_equivalents.txt"))
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    args = parser.parse_args(argv)

    equivalents = read_equivalents(args.equivalents)
    rows, survivors, not_equivalent, unknown = {}, [], [], []
    for meta in sorted(args.mutants.rglob("*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter()
        for name, code in sorted(exit_codes.items()):
            if name in equivalents:
                counts["equivalent"] += 1
                if code in KILLED:
                    not_equivalent.append(name)
            elif code in KILLED:
                counts["killed"] += 1
            elif code in SURVIVED:
                counts["survived"] += 1
                survivors.append(f"{name}: {SURVIVED[code]}")
            else:
                counts["other"] += 1
                unknown.append(f"{name}: exit code {code}")
        rows[str(meta.relative_to(args.mutants))[: -len(".meta")]] = counts
    if not rows:
        print("No mutmut results here: run `make mutation` first.", file=sys.stderr)
        return 1

    total = sum(rows.values(), Counter())
    print(f"{'file':45} {'killed':>7} {'survived':>9} {'equivalent':>11} {'score':>7}")
    for name, c in [*rows.items(), ("total", total)]:
        decided = c["killed"] + c["survived"]
        score = 100.0 * c["killed"] / decided if decided else float("nan")
        print(f"{name:45} {c['killed']:7d} {c['survived']:9d} {c['equivalent']:11d} {score:6.1f}%")
    for title, names in (("Survivors", survivors), ("Listed as equivalent but killed", not_equivalent),
                         ("Not run (mutmut interrupted?)", unknown)):  # fmt: skip
        if names:
            print(f"\n{title} ({len(names)}; `cd build/mutation && ../../.venv/bin/mutmut show NAME`):")
            print("\n".join(f"  {n}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
