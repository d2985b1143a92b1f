"""E-model (ITU-T G.107) MOS estimate for G.711 with PLC."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.rtp.mos import estimate_mos, mos_from_r, r_factor


def test_default_connection_rates_93_2() -> None:
    # G.107 §7: all parameters at their defaults give R = 93.2
    assert r_factor(packet_loss_percent=0, one_way_delay_ms=0) == pytest.approx(93.2, abs=0.05)


def test_perfect_g711_is_about_4_4() -> None:
    assert estimate_mos(loss_fraction=0.0, rtt_seconds=None) == pytest.approx(4.41, abs=0.02)


def test_five_percent_random_loss_is_clearly_worse() -> None:
    # Ie_eff = 95 * 5 / (5 + 25.1) = 15.8 -> R ~ 77.4 -> MOS ~ 3.9
    mos = estimate_mos(loss_fraction=0.05, rtt_seconds=None)
    assert mos == pytest.approx(3.92, abs=0.03)
    assert mos < estimate_mos(loss_fraction=0.0, rtt_seconds=None) - 0.4


def test_long_delay_hurts_even_without_loss() -> None:
    # G.114: beyond ~400 ms one-way, conversation suffers badly
    assert estimate_mos(loss_fraction=0.0, rtt_seconds=0.8) < 3.3
    assert estimate_mos(loss_fraction=0.0, rtt_seconds=0.1) > 4.3


def test_jitter_buffer_delay_adds_to_one_way_delay() -> None:
    a = estimate_mos(loss_fraction=0.01, rtt_seconds=0.2, jitter_buffer_delay_seconds=0.1)
    b = mos_from_r(r_factor(packet_loss_percent=1.0, one_way_delay_ms=200.0))
    assert a == pytest.approx(b)


@pytest.mark.parametrize(
    ("r", "mos"), [(-5, 1.0), (0, 1.0), (50, 2.58), (70, 3.6), (80, 4.02), (100, 4.5), (120, 4.5)]
)
def test_annex_b_mapping(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=0.01)


@given(
    st.floats(0, 50),
    st.floats(0, 50),
    st.floats(0, 1000),
)
def test_monotone_in_loss(loss: float, extra: float, delay: float) -> None:
    worse = r_factor(packet_loss_percent=loss + extra, one_way_delay_ms=delay)
    assert worse <= r_factor(packet_loss_percent=loss, one_way_delay_ms=delay)


@given(st.floats(0, 30), st.floats(0, 1000), st.floats(0, 1000))
def test_monotone_in_delay(loss: float, delay: float, extra: float) -> None:
    worse = r_factor(packet_loss_percent=loss, one_way_delay_ms=delay + extra)
    assert worse <= r_factor(packet_loss_percent=loss, one_way_delay_ms=delay) + 1e-9


@given(st.floats(0, 1), st.none() | st.floats(0, 5), st.floats(0, 1))
def test_mos_stays_in_range(loss: float, rtt: float | None, jb: float) -> None:
    assert 1.0 <= estimate_mos(loss_fraction=loss, rtt_seconds=rtt, jitter_buffer_delay_seconds=jb) <= 4.5


@given(st.floats(-50, 150), st.floats(0, 50))
def test_annex_b_mapping_is_monotone(r: float, extra: float) -> None:
    assert mos_from_r(r + extra) >= mos_from_r(r)
