"""Combine the coverage data of a `make test` run (the test process and every server,
worker and CLI it started) and print line and branch coverage of src/ and the SDK;
exit 1 below the floor (`fail_under` in pyproject.toml)."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage"]["report"]["fail_under"]
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))
    cov.combine()
    cov.save()
    folder = ROOT / ".coverage-data"
    with (folder / "report.txt").open("w") as out:
        cov.report(file=out, skip_covered=True)
    cov.json_report(outfile=str(folder / "coverage.json"), pretty_print=False)
    totals = json.loads((folder / "coverage.json").read_text())["totals"]
    total = totals["percent_covered"]
    print(
        f"coverage of src/ and the SDK: lines {totals['percent_statements_covered']:.1f}% "
        f"({totals['covered_lines']}/{totals['num_statements']}), branches "
        f"{totals['percent_branches_covered']:.1f}% ({totals['covered_branches']}/{totals['num_branches']}), "
        f"combined {total:.1f}% (floor {floor}%); per file: .coverage-data/report.txt"
    )
    if total < floor:
        print(f"coverage {total:.1f}% is below the floor of {floor}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
