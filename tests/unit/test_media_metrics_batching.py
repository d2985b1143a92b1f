"""RTP packet and byte counters of a call are batched (gateway/call_media.py, gateway/transport/rtp_endpoint.py):
they reach /metrics within a second of playout and completely at call end, with the same totals as counting
every packet."""

from __future__ import annotations

from gateway.codecs.g711 import alaw_encode
from tests.unit.test_call_media import Rig, params


def rtp(rig: Rig, direction: str, what: str = "packets") -> float:
    value = rig.metrics.registry.get_sample_value(f"voicegw_rtp_{what}_total", {"direction": direction})
    return value or 0.0


def test_counts_reach_the_metrics_within_a_second_and_all_of_them_at_close() -> None:
    rig = Rig(params("PCMA", 8))
    frame = alaw_encode(b"\x10\x20" * 160)
    for i in range(120):  # 2.4 s of audio, echoed back
        rig.deliver(rig.packet(frame, marker=i == 0))
        rig.step()
    # flushed at least once a second: everything but the last second is there
    assert 120 - 50 <= rtp(rig, "in") <= 120
    assert rtp(rig, "out") >= len(rig.rtp.sent) - 50 > 0
    rig.media.close()
    sent = [data for data, _ in rig.rtp.sent if not 192 <= data[1] <= 223]
    assert rtp(rig, "in") == 120
    assert rtp(rig, "in", "bytes") == 120 * (12 + 160)
    assert rtp(rig, "out") == len(sent)
    assert rtp(rig, "out", "bytes") == sum(len(data) for data in sent)
    rig.media.close()  # a second close adds nothing
    assert rtp(rig, "in") == 120 and rtp(rig, "out") == len(sent)
