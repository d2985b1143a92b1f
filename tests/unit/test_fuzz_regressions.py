"""Inputs that once broke a parser, replayed through the same fuzz targets that found them.

``make fuzz`` saves every crashing input under ``fuzz/crashes/<target>-...``; the file stays there after
the fix and this test keeps it fixed. The seed inputs of every target pass too (a target that rejected
its own seeds would fuzz nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS, seeds

CRASHES = Path(__file__).resolve().parents[2] / "fuzz" / "crashes"


def _target_of(path: Path) -> str:
    return next(name for name in sorted(TARGETS, key=len, reverse=True) if path.name.startswith(name + "-"))


SAVED = sorted(p for p in CRASHES.glob("*-*") if p.is_file())


def test_saved_inputs_exist() -> None:
    assert SAVED, "fuzz/crashes/ holds the regression inputs"


@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.name)
def test_saved_crash_input_is_handled(path: Path) -> None:
    TARGETS[_target_of(path)](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seed_inputs_pass_their_target(target: str) -> None:
    inputs = seeds(target)
    assert inputs
    for data in inputs:
        TARGETS[target](data)
