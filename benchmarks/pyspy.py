"""Sample a running gateway with py-spy and fold the stacks into a per-function table.

``record(pid, seconds, raw)`` runs ``py-spy record -f raw`` (one line per distinct stack: frames joined by ``;``,
innermost last, then a space and the sample count) against a live process; ``fold(raw)`` turns that into rows
of *self* % (samples whose innermost Python frame is the function: C work it calls, a syscall, counts here)
and *inclusive* % (samples with the function anywhere on the stack), line numbers dropped.

Usage: .venv/bin/python benchmarks/pyspy.py RAW_FILE [--top 25]   (print the table of a recorded file)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FunctionShare", "fold", "markdown", "record"]

_LINE = re.compile(r":\d+\)$")


@dataclass(frozen=True, slots=True)
class FunctionShare:
    function: str
    self_pct: float
    inclusive_pct: float


def py_spy() -> str:
    """The py-spy binary next to this interpreter (the dev extra), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[dev]')")
    return found


def record(pid: int, seconds: float, raw: Path, *, rate: int = 200) -> Path:
    """Sample ``pid`` for ``seconds`` at ``rate`` Hz into ``raw`` (py-spy's raw folded format)."""
    subprocess.run([py_spy(), "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate),
                    "-f", "raw", "-o", str(raw), "--nonblocking"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=seconds + 30)
    return raw


def _frame(text: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` relative to the package when it is ours."""
    text = _LINE.sub(")", text.strip())
    name, _, where = text.partition(" (")
    where = where.rstrip(")")
    for root in ("gateway/", "asyncio/", "concurrent/", "prometheus_client/", "structlog/"):
        if root in where:
            where = root + where.split(root, 1)[1]
            break
    else:
        where = Path(where).name
    return f"{name} ({where})"


def fold(raw: Path) -> tuple[int, list[FunctionShare]]:
    """(total samples, rows sorted by self % then inclusive %)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    if total == 0:
        return 0, []
    rows = [FunctionShare(name, 100.0 * own[name] / total, 100.0 * anywhere[name] / total) for name in anywhere]
    rows.sort(key=lambda r: (-r.self_pct, -r.inclusive_pct, r.function))
    return total, rows


def markdown(rows: list[FunctionShare], top: int = 25) -> str:
    lines = ["| # | function (file) | self % | inclusive % |", "|---:|---|---:|---:|"]
    for i, row in enumerate(rows[:top], 1):
        lines.append(f"| {i} | `{row.function}` | {row.self_pct:.1f} | {row.inclusive_pct:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--inclusive", action="store_true", help="sort by inclusive % instead of self %")
    args = parser.parse_args()
    total, rows = fold(args.raw)
    if args.inclusive:
        rows.sort(key=lambda r: (-r.inclusive_pct, r.function))
    print(f"{total} samples")
    print(markdown(rows, args.top))


if __name__ == "__main__":
    main()
