"""The startup warning when the RTP range overlaps the kernel's ephemeral port range."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import ephemeral_overlap


@pytest.mark.parametrize(
    ("rtp", "ephemeral", "expected"),
    [
        ((20000, 20999), "32768\t60999\n", None),  # the defaults: disjoint
        ((30000, 40000), "32768\t60999\n", (32768, 40000)),
        ((40000, 41000), "32768\t60999\n", (40000, 41000)),  # wholly inside
        ((60999, 62000), "32768 60999", (60999, 60999)),  # one port shared
        ((10000, 20000), "1024\t65535\n", (10000, 20000)),
    ],
)
def test_overlap(tmp_path: Path, rtp: tuple[int, int], ephemeral: str, expected: tuple[int, int] | None) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text(ephemeral)
    assert ephemeral_overlap(*rtp, source=source) == expected


def test_unreadable_or_garbled_range_is_no_warning(tmp_path: Path) -> None:
    assert ephemeral_overlap(20000, 20999, source=tmp_path / "missing") is None
    garbled = tmp_path / "garbled"
    garbled.write_text("not numbers")
    assert ephemeral_overlap(20000, 20999, source=garbled) is None
