"""The metrics the gateway exports (gateway/observability/metrics.py): names, types and labels are a contract
with dashboards and alerts, so a rename or a new label fails here; and a call's receive quality reaches them
once, at call end."""

from __future__ import annotations

import pytest
from prometheus_client.metrics import MetricWrapperBase

from gateway.codecs.g711 import alaw_encode
from gateway.observability.metrics import Metrics
from tests.unit.test_call_media import Rig, params, speech_like

# (exported family name, type, label names); counters are exported with the ``_total`` suffix.
EXPECTED: list[tuple[str, str, tuple[str, ...]]] = [
    ("voicegw_sip_requests_received", "counter", ("method",)),
    ("voicegw_sip_responses_sent", "counter", ("method", "status_class")),
    ("voicegw_sip_responses_received", "counter", ("method", "status_class")),
    ("voicegw_sip_messages_dropped", "counter", ("reason",)),
    ("voicegw_sip_invites", "counter", ("outcome",)),
    ("voicegw_overload_episodes", "counter", ("signal",)),
    ("voicegw_sip_requests_limited", "counter", ("action",)),
    ("voicegw_sip_bans", "counter", ()),
    ("voicegw_sip_banned_sources", "gauge", ()),
    ("voicegw_calls_active", "gauge", ("direction",)),
    ("voicegw_calls_ended", "counter", ("direction", "reason")),
    ("voicegw_call_setup_seconds", "histogram", ("direction",)),
    ("voicegw_call_duration_seconds", "histogram", ("direction",)),
    ("voicegw_trunk_registrations", "counter", ("result",)),
    ("voicegw_rtp_ports_in_use", "gauge", ()),
    ("voicegw_rtp_port_pool_size", "gauge", ()),
    ("voicegw_rtp_packets", "counter", ("direction",)),
    ("voicegw_rtp_bytes", "counter", ("direction",)),
    ("voicegw_rtp_packets_dropped", "counter", ("reason",)),
    ("voicegw_srtp_errors", "counter", ("direction", "kind")),
    ("voicegw_rtp_packets_lost", "counter", ()),
    ("voicegw_rtp_packets_late", "counter", ()),
    ("voicegw_rtp_packets_duplicated", "counter", ()),
    ("voicegw_rtp_frames_concealed", "counter", ()),
    ("voicegw_rtp_jitter_seconds", "histogram", ()),
    ("voicegw_jitter_buffer_delay_seconds", "histogram", ()),
    ("voicegw_dtmf_digits", "counter", ("method",)),
    ("voicegw_dtmf_digits_sent", "counter", ("method",)),
    ("voicegw_rtp_packets_ignored", "counter", ("reason",)),
    ("voicegw_rtcp_packets", "counter", ("direction",)),
    ("voicegw_rtp_latched", "counter", ("how",)),
    ("voicegw_rtp_media_timeouts", "counter", ()),
    ("voicegw_playout_lateness_seconds", "histogram", ()),
    ("voicegw_playout_ticks_skipped", "counter", ()),
    ("voicegw_playout_streams", "gauge", ()),
    ("voicegw_call_mos", "histogram", ()),
    ("voicegw_event_loop_lag_seconds", "histogram", ()),
    ("voicegw_gc_pause_seconds", "histogram", ("generation",)),
    ("voicegw_asyncio_tasks", "gauge", ()),
    ("voicegw_turn_latency_seconds", "histogram", ("stage",)),
    ("voicegw_barge_ins", "counter", ("reason",)),
    ("voicegw_barge_in_stop_seconds", "histogram", ()),
    ("voicegw_provider_errors", "counter", ("provider", "kind")),
    ("voicegw_provider_latency_seconds", "histogram", ("provider", "stage")),
    ("voicegw_pipeline_frames_dropped", "counter", ("reason",)),
    ("voicegw_assistant_requests", "counter", ("result",)),
    ("voicegw_assistant_request_seconds", "histogram", ()),
    ("voicegw_webhook_deliveries", "counter", ("result",)),
    ("voicegw_webhook_outbox_depth", "gauge", ()),
    ("voicegw_webhook_delivery_seconds", "histogram", ()),
    ("voicegw_tool_calls", "counter", ("type", "result")),
    ("voicegw_transfers", "counter", ("mode", "result")),
    ("voicegw_api_requests", "counter", ("route", "status_class")),
]
# Labels that would make a series per call or per caller: never allowed.
FORBIDDEN_LABELS = {"call_id", "callid", "id", "number", "phone_number", "from", "to", "uri", "ssrc", "peer"}


def _families(metrics: Metrics) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every family the metrics define, by name: (type, label names), labels read from the metric objects
    so families without samples yet still show theirs."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and not getattr(metric, "_labelvalues", ()):
            labels = tuple(getattr(metric, "_labelnames", ()))
            for family in metric.describe():
                out[family.name] = (family.type, labels)
    return out


def test_the_registry_exports_exactly_the_metrics_defined() -> None:
    metrics = Metrics()
    exported = {family.name for family in metrics.registry.collect()}
    assert exported == set(_families(metrics))


@pytest.mark.parametrize(("name", "kind", "labels"), EXPECTED, ids=[row[0] for row in EXPECTED])
def test_metric_name_type_and_labels(name: str, kind: str, labels: tuple[str, ...]) -> None:
    families = _families(Metrics())
    assert name in families, f"{name} is not exported"
    assert families[name] == (kind, labels)


def test_no_metric_outside_the_table_and_no_high_cardinality_label() -> None:
    families = _families(Metrics())
    assert set(families) == {name for name, _, _ in EXPECTED}
    for name, (_, labels) in families.items():
        assert not FORBIDDEN_LABELS & set(labels), name
        assert name.startswith("voicegw_"), name


def test_counters_export_with_total_suffix_and_base_units() -> None:
    metrics = Metrics()
    metrics.rtp_packets_lost.inc(3)
    metrics.rtp_jitter_seconds.observe(0.004)
    sample = metrics.registry.get_sample_value
    assert sample("voicegw_rtp_packets_lost_total") == 3
    assert sample("voicegw_rtp_jitter_seconds_count") == 1
    assert sample("voicegw_rtp_jitter_seconds_bucket", {"le": "0.005"}) == 1
    assert sample("voicegw_rtp_jitter_seconds_bucket", {"le": "0.002"}) == 0


def _count(rig: Rig, name: str, labels: dict[str, str] | None = None) -> float:
    value = rig.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def test_call_end_reports_loss_duplicates_concealment_and_one_jitter_observation() -> None:
    rig = Rig(params("PCMA", 8))
    pcm = speech_like(2.0)
    frames = [pcm[i : i + 160].tobytes() for i in range(0, len(pcm), 160)]
    lost = {30, 31, 60}
    for i, frame in enumerate(frames):
        data = rig.packet(alaw_encode(frame), marker=i == 0)
        if i in lost:
            continue
        rig.deliver(data)
        if i == 45:
            rig.deliver(data)  # the network duplicated it
        rig.step()
    rig.step(0.3)
    # nothing is counted while the call runs: the hot path stays as it was
    assert _count(rig, "voicegw_rtp_packets_lost_total") == 0
    assert _count(rig, "voicegw_rtp_jitter_seconds_count") == 0
    stats = rig.media.media_stats()
    rig.media.close()
    assert _count(rig, "voicegw_rtp_packets_lost_total") == len(lost)
    assert _count(rig, "voicegw_rtp_packets_duplicated_total") == 1
    assert stats.jitter_buffer is not None and stats.receiver is not None
    assert _count(rig, "voicegw_rtp_frames_concealed_total") == stats.jitter_buffer.frames_concealed >= len(lost)
    assert _count(rig, "voicegw_rtp_packets_late_total") == stats.receiver.late
    assert _count(rig, "voicegw_rtp_jitter_seconds_count") == 1
    assert _count(rig, "voicegw_rtp_jitter_seconds_sum") == pytest.approx(stats.receiver.jitter_seconds)
    assert _count(rig, "voicegw_jitter_buffer_delay_seconds_count") == 1
    assert _count(rig, "voicegw_jitter_buffer_delay_seconds_sum") == pytest.approx(
        stats.jitter_buffer.current_delay)
    rig.media.close()  # a second close observes nothing more
    assert _count(rig, "voicegw_rtp_jitter_seconds_count") == 1
    assert _count(rig, "voicegw_rtp_packets_lost_total") == len(lost)


def test_a_call_that_received_no_rtp_observes_no_jitter() -> None:
    rig = Rig(params("PCMU", 0))
    rig.step(0.5)
    rig.media.close()
    assert _count(rig, "voicegw_rtp_jitter_seconds_count") == 0
    assert _count(rig, "voicegw_jitter_buffer_delay_seconds_count") == 0
    assert _count(rig, "voicegw_rtp_packets_lost_total") == 0
