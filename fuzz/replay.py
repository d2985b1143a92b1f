"""Replay saved inputs against a target: ``python -m fuzz.replay FILE...`` (target from the file name)."""

from __future__ import annotations

import sys
from pathlib import Path

from fuzz.targets import TARGETS


def main() -> None:
    for arg in sys.argv[1:]:
        path = Path(arg)
        name = next(t for t in sorted(TARGETS, key=len, reverse=True) if path.name.startswith(t + "-"))
        print(f"{path}: target {name}")
        TARGETS[name](path.read_bytes())


if __name__ == "__main__":
    main()
