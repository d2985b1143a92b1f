"""A/B in one run: an older tree and this one measured in alternating subprocesses (the in-process benchmarks'
``--baseline DIR`` mode). On a shared, noisy machine only figures taken side by side compare, so each round runs
both, and the result is the ratio of the medians. Standard library only: the subprocesses import their own tree's
``gateway`` package through ``--source``."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Comparison", "alternate", "alternate_env"]


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: list[float]
    current: list[float]

    @property
    def ratio(self) -> float:
        """current / baseline, of the medians."""
        return statistics.median(self.current) / statistics.median(self.baseline)


def alternate(script: Path, args: list[str], baseline: Path, current: Path, rounds: int) -> Comparison:
    """``rounds`` times: ``script --source DIR *args`` for ``baseline`` then ``current``; each run prints its
    figure as the last word of its output (a log line may come before it)."""
    runs: dict[Path, list[float]] = {baseline: [], current: []}
    for _ in range(rounds):
        for source in (baseline, current):
            out = subprocess.run([sys.executable, str(script), "--source", str(source), *args],
                                 check=True, capture_output=True, text=True).stdout.split()
            runs[source].append(float(out[-1]))
    return Comparison(runs[baseline], runs[current])


def alternate_env(script: Path, args: list[str], baseline: Mapping[str, str], current: Mapping[str, str],
                  rounds: int) -> Comparison:
    """Like :func:`alternate`, for one tree run two ways: ``script *args`` under the ``baseline`` then the
    ``current`` environment variables (e.g. ``VOICEGW_NATIVE=0`` against the compiled media path)."""
    runs: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, extra in enumerate((baseline, current)):
            out = subprocess.run([sys.executable, str(script), *args], env={**os.environ, **extra},
                                 check=True, capture_output=True, text=True).stdout.split()
            runs[i].append(float(out[-1]))
    return Comparison(runs[0], runs[1])
