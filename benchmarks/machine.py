"""What every benchmark records beside its figures: the CPU and the code revision that was measured."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision(measured: Sequence[str] = ()) -> str:
    """Short HEAD revision, flagged when the measured files have uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if not measured:
            return rev
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", *measured],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" (with uncommitted changes in the measured code)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
