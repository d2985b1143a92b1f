"""What every benchmark records beside its figures: the CPU and the code revision that was measured."""

from __future__ import annotations

import os
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


def git_head() -> str:
    """``git rev-parse HEAD``, with "+dirty" when the working tree has uncommitted changes to tracked files."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def describe_machine() -> str:
    """One line: CPU model and count, kernel, Python, SIPp version, load average when measured."""
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "unknown"
    try:
        sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False).stdout
        sipp_version = next((w for w in sipp.split() if w.startswith("v3")), "unknown")
    except OSError:
        sipp_version = "not installed"
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, SIPp {sipp_version}, media path {media_path()}, load average {load}"
    )


def media_path() -> str:
    """What the gateway processes a benchmark starts (same tree, same environment) run: the mypyc-compiled media
    modules or their Python sources (gateway/native.py)."""
    try:
        from gateway.native import STATUS
    except ImportError:
        return "unknown"
    return {"compiled": "compiled (mypyc)", "disabled": "Python (VOICEGW_NATIVE=0)"}.get(STATUS, f"Python ({STATUS})")
