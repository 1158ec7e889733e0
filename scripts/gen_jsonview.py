"""Copy the server's JSON view into the Python SDK.

The SDK's `to_json` must answer the JSON the HTTP/JSON projection and MCP answer
for the same result, but the SDK cannot import the server. So the view is
written once, in src/server/api/jsonview.py, and this script copies it to
clients/python/src/geopera_sdk/_jsonview.py under a "generated" header;
`--check` exits 1 when the committed copy is not that (stale or hand-edited).
`make generate` / `make check-generated` run it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "server" / "api" / "jsonview.py"
TARGET = ROOT / "clients" / "python" / "src" / "geopera_sdk" / "_jsonview.py"
HEADER = "# Generated from src/server/api/jsonview.py by scripts/gen_jsonview.py: edit that file, not this one.\n"


def generate() -> str:
    return HEADER + SOURCE.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed copy is stale")
    args = parser.parse_args(argv)
    expected = generate()
    if args.check:
        if TARGET.read_text() != expected:
            print(f"{TARGET.relative_to(ROOT)} is stale: run `python scripts/gen_jsonview.py`", file=sys.stderr)
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    TARGET.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
