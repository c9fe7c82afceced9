"""Fenced code blocks of the project's markdown, as a reader sees them.

A block preceded (on the line just before its fence) by ``<!-- not-run: REASON -->`` is one the
docs deliberately show without running it (output samples, HTTP transcripts, diagrams).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-yaml (a docker-compose dependency)


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str  # the fence's info string, lower case ("" when none)
    text: str
    not_run: str | None  # the marker's reason, or None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    rel = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            # Inside a list item the fence is indented: its lines lose that indent, no more.
            line = lines[j]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{rel}:{i + 1}: code block never closed")
        out.append(
            Block(rel, i + 1, m["info"].lower(), "\n".join(body) + "\n",
                  marker["reason"] if marker else None)
        )  # fmt: skip
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    return [b for f in markdown_files() for b in blocks(f)]


def load_yaml(text: str) -> object:
    """Parse YAML with a real parser: Debian's python3-yaml, which ``./dev`` installs with
    docker-compose (PyYAML is no dependency of dockvol). ValueError says why it is not YAML."""
    if not Path(SYSTEM_PYTHON).exists():
        raise AssertionError(f"{SYSTEM_PYTHON} missing: ./dev installs it (docker-compose)")
    code = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout, default=str)"
    r = subprocess.run(
        [SYSTEM_PYTHON, "-c", code], input=text, capture_output=True, text=True, timeout=60
    )
    if r.returncode != 0:
        raise ValueError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "no output")
    return json.loads(r.stdout)
