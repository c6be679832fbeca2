"""``python -m tests.mutation_score``: the mutation score per module, from
the results ``mutmut run`` left in ``mutants/`` (see ``make mutate``).

A mutant listed in ``tests/mutation-equivalents.md`` (one line each: the
mutant's name in backticks and why no test can tell it from the original)
is left out of the score. Every other surviving mutant is a missing test.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.md"
#: Where the project holds itself to at least TARGET killed.
HELD = ("streaming.", "settings", "tools.", "llm")
TARGET = 0.90
KILLED = {1, 3, 36, -24, 24, 152, 255, 37}  # killed, pytest error, timeouts, caught by type check


def equivalents() -> set[str]:
    if not EQUIVALENTS.exists():
        return set()
    return set(re.findall(r"^- `([^`]+)`", EQUIVALENTS.read_text(encoding="utf-8"), flags=re.MULTILINE))


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """Exit code of each mutant's test run, by module."""
    found: dict[str, dict[str, int | None]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = ".".join(meta.relative_to(mutants).with_suffix("").with_suffix("").parts)
        found[module.removesuffix(".__init__")] = json.loads(meta.read_text())["exit_code_by_key"]
    return found


def main() -> int:
    mutants = ROOT / "mutants"
    if not mutants.is_dir():
        print("no mutants/: run `make mutate` first")
        return 1
    skip = equivalents()
    rows, held = [], Counter()
    for module, codes in results(mutants).items():
        count = Counter()
        for name, code in codes.items():
            if name in skip:
                count["equivalent"] += 1
            elif code is None:
                count["not run"] += 1
            elif code in KILLED:
                count["killed"] += 1
            elif code == 0:
                count["survived"] += 1
            else:  # no tests (5, 33), suspicious, skipped: no test told it apart
                count["survived"] += 1
        if not codes:
            continue
        rows.append((module, count))
        if module.startswith(HELD):
            held.update(count)
    print(f"{'module':32} {'mutants':>7} {'killed':>7} {'survived':>8} {'equiv.':>6} {'not run':>7} {'score':>7}")
    for module, count in rows:
        print(
            f"{module:32} {count.total():7} {count['killed']:7} {count['survived']:8} {count['equivalent']:6} "
            f"{count['not run']:7} {_score(count)}"
        )
    print(f"\nstreaming/, settings.py, tools/, llm/: {_score(held)} killed (target {TARGET:.0%})")
    return 0


def _score(count: Counter) -> str:
    tested = count["killed"] + count["survived"]
    return f"{count['killed'] / tested:7.1%}" if tested else "      -"


if __name__ == "__main__":
    sys.exit(main())
