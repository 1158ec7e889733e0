"""`bench/RESULTS.md`: one `## ` section per bench, each rewritten only by its
owner, so benches can be added (and run alone with `--only`) without losing
the others' last results."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"

PREAMBLE = """# Benchmark results

Written by `make bench` (`.venv/bin/python -m bench.run`; `--only NAME` runs one bench,
`--duration SECONDS` sets the measured time per point). Each `## ` section belongs to one
bench module in `bench/` and is regenerated when that bench runs; the other sections are
kept as they were. Numbers come from whatever machine ran the bench last: compare ratios
measured in the same run, not absolute numbers across runs. Every timed figure is the
median [min–max] of the same number of runs (`--runs`, default 3) for the server and
every peer, the runs interleaved.
"""


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(title, body)]): a section runs from its `## title` line to the next one."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), [(t, "\n".join(b)) for t, b in sections]


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def machine_line() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpus} CPUs ({platform.machine()}, {platform.processor() or platform.system()}), "
        f"Python {sys.version.split()[0]}, grpcio {_package_version('grpcio')}, "
        f"protobuf {_package_version('protobuf')}, psycopg {_package_version('psycopg')}; "
        f"load average at start {load}"
    )


@dataclass
class Results:
    """Collects the sections written during one `bench.run` and saves them."""

    path: Path = RESULTS_PATH
    updated: dict[str, str] = field(default_factory=dict)

    def set_section(self, title: str, body: str) -> None:
        self.updated[title] = body.strip("\n")
        self.save()

    def save(self) -> None:
        text = self.path.read_text() if self.path.exists() else ""
        _, sections = split_sections(text)
        merged = dict(sections)
        merged.update(self.updated)
        parts = [PREAMBLE.rstrip("\n")]
        for title, body in merged.items():
            parts.append(f"## {title}\n\n{body.strip(chr(10))}")
        tmp = self.path.with_suffix(".md.tmp")
        tmp.write_text("\n\n".join(parts) + "\n")
        tmp.replace(self.path)


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
