"""One report writer for the benchmarks and checks: `<name>.json` and `<name>.md` side by side.

The convention: `make bench-X` writes runs/bench/X/bench-X.json and .md (BENCH_ROOT), prints the
markdown and says where both went.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH_ROOT = Path("runs/bench")


def bench_folder(name: str) -> str:
    """The default --output-dir of benchmark `name` (e.g. "speed" -> runs/bench/speed)."""
    return str(BENCH_ROOT / name)


def write_report(folder: str | Path, name: str, data: Any, lines: list[str]) -> Path:
    """Write `data` as `<name>.json` and `lines` as `<name>.md` into `folder`, print the lines
    and where both went; the JSON's path."""
    output = Path(folder)
    output.mkdir(parents=True, exist_ok=True)
    json_path = output / f"{name}.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    (output / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {json_path}, {output / f'{name}.md'}", flush=True)
    return json_path
