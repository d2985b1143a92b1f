"""Listening-quality estimate for a G.711 call: ITU-T G.107 E-model, simplified.

R = Ro - Is - Id - Ie_eff + A   (G.107 §7.1, formula 7-1)

Simplifications, all at G.107's default values (Table 3): the basic signal-to-noise ratio
Ro = 94.77 and the simultaneous impairment Is = 1.41 are the defaults' constants; the
advantage factor A = 0; echo is controlled (TELR = 65 dB, WEPL = 110 dB).
What varies per call is

- Id (§7.4): talker echo Idte, listener echo Idle and the pure-delay impairment Idd,
  from the mean one-way delay Ta = T = Tr/2, taken as RTT/2 + jitter-buffer delay;
- Ie_eff (§7.5, formula 7-29) from the packet-loss percentage Ppl, with Ie = 0 and
  Bpl = 25.1 for G.711 with packet-loss concealment (G.113 Appendix I, Table I.3).

R maps to a mean opinion score with G.107 Annex B (formula B-4).
"""

from __future__ import annotations

import math

__all__ = ["BPL_G711_PLC", "estimate_mos", "mos_from_r", "r_factor"]

_RO = 94.77  # basic signal-to-noise ratio at default values (G.107 §7.2)
_IS = 1.41  # simultaneous impairment factor at default values (G.107 §7.3)
_ROE = 94.77  # -1.5 * (No - RLR) with No = -61.18 dBm0p, RLR = 2 dB
_TELR = 65.0
_WEPL = 110.0
BPL_G711_PLC = 25.1  # G.113 Appendix I: G.711 with PLC, random loss
_MT = 100.0  # ms: delay below which Idd is 0 (G.107 default mT)


def _idte(t: float) -> float:
    """Talker echo impairment (G.107 formulas 7-19 to 7-21), T = one-way echo path delay in ms."""
    terv = _TELR - 40.0 * math.log10((1.0 + t / 10.0) / (1.0 + t / 150.0)) + 6.0 * math.exp(-0.3 * t * t)
    re = 80.0 + 2.5 * (terv - 14.0)
    diff = _ROE - re
    idte = (diff / 2.0 + math.sqrt(diff * diff / 4.0 + 100.0) - 1.0) * (1.0 - math.exp(-t))
    # The formula dips a hair below 0 for T under ~4 ms (the 6*exp(-0.3*T^2) term); an
    # impairment is never an improvement, so clamp it to keep R monotone in delay.
    return max(0.0, idte)


def _idle(tr: float) -> float:
    """Listener echo impairment (G.107 formulas 7-24, 7-25), Tr = round-trip delay in ms."""
    rle = 10.5 * (_WEPL + 7.0) * math.pow(tr + 1.0, -0.25)
    diff = _RO - rle
    return diff / 2.0 + math.sqrt(diff * diff / 4.0 + 169.0)


def _idd(ta: float) -> float:
    """Impairment of pure delay (G.107 formulas 7-26, 7-27 with sT = 1), Ta in ms."""
    if ta <= _MT:
        return 0.0
    x = math.log(ta / _MT) / math.log(2.0)
    return 25.0 * (math.pow(1.0 + x**6, 1.0 / 6.0) - 3.0 * math.pow(1.0 + (x / 3.0) ** 6, 1.0 / 6.0) + 2.0)


def r_factor(
    *,
    packet_loss_percent: float,
    one_way_delay_ms: float,
    ie: float = 0.0,
    bpl: float = BPL_G711_PLC,
    burst_ratio: float = 1.0,
) -> float:
    """Transmission rating R for the given loss (0..100 %) and mean one-way delay (ms)."""
    ppl = min(100.0, max(0.0, packet_loss_percent))
    ta = max(0.0, one_way_delay_ms)
    ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_ratio + bpl)
    idelay = _idte(ta) + _idle(2.0 * ta) + _idd(ta)
    return _RO - _IS - idelay - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: estimated MOS (conversational quality) from R, in 1.0..4.5."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    # the cubic dips just below 1.0 for R under ~6.5: keep the result on the MOS scale
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def estimate_mos(
    *,
    loss_fraction: float,
    rtt_seconds: float | None,
    jitter_buffer_delay_seconds: float = 0.0,
) -> float:
    """MOS of a G.711 leg: ``loss_fraction`` in 0..1, RTT from RTCP (None when unknown: 0 assumed)."""
    one_way = (rtt_seconds or 0.0) / 2.0 + jitter_buffer_delay_seconds
    return mos_from_r(r_factor(packet_loss_percent=100.0 * loss_fraction, one_way_delay_ms=1000.0 * one_way))
