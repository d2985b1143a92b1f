"""Every metric of the gateway, defined once (base units, low-cardinality labels, never a call id)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.sip_requests_received = Counter(
            "voicegw_sip_requests_received", "SIP requests received", ["method"], registry=r
        )
        self.sip_responses_sent = Counter(
            "voicegw_sip_responses_sent", "SIP responses sent", ["method", "status_class"], registry=r
        )
        self.sip_responses_received = Counter(
            "voicegw_sip_responses_received", "SIP responses received", ["method", "status_class"], registry=r
        )
        self.sip_messages_dropped = Counter(
            "voicegw_sip_messages_dropped", "SIP messages dropped, by reason", ["reason"], registry=r
        )
        self.invites = Counter(
            "voicegw_sip_invites", "Inbound INVITEs by outcome", ["outcome"], registry=r
        )
        self.overload_episodes = Counter(
            "voicegw_overload_episodes", "Load-shedding episodes by the signal that started them "
            "(event_loop_lag, playout_lateness, sip_backlog)", ["signal"], registry=r,
        )
        self.sip_requests_limited = Counter(
            "voicegw_sip_requests_limited", "SIP requests over their source's rate, by action (503, drop)",
            ["action"], registry=r,
        )
        self.sip_bans = Counter("voicegw_sip_bans", "Source addresses banned after failed Digest answers",
                                registry=r)
        self.sip_banned_sources = Gauge("voicegw_sip_banned_sources", "Source addresses banned now", registry=r)
        self.calls_active = Gauge("voicegw_calls_active", "Calls in progress", ["direction"], registry=r)
        self.calls_ended = Counter(
            "voicegw_calls_ended", "Calls ended, by ended reason", ["direction", "reason"], registry=r
        )
        self.call_setup_seconds = Histogram(
            "voicegw_call_setup_seconds",
            "INVITE received/sent to 200 OK sent/received",
            ["direction"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.call_duration_seconds = Histogram(
            "voicegw_call_duration_seconds",
            "Answered call duration",
            ["direction"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.registrations = Counter(
            "voicegw_trunk_registrations", "REGISTER outcomes per attempt", ["result"], registry=r
        )
        self.rtp_ports_in_use = Gauge("voicegw_rtp_ports_in_use", "RTP ports allocated", registry=r)
        self.rtp_packets = Counter(
            "voicegw_rtp_packets", "RTP packets", ["direction"], registry=r
        )
        # Per-packet paths use the children directly: resolving labels costs ~1 µs a packet.
        self.rtp_packets_in = self.rtp_packets.labels("in")
        self.rtp_packets_out = self.rtp_packets.labels("out")
        self.rtp_bytes = Counter(
            "voicegw_rtp_bytes", "RTP bytes (UDP payload: RTP header and payload) of the packets counted in "
            "voicegw_rtp_packets", ["direction"], registry=r
        )
        self.rtp_bytes_in = self.rtp_bytes.labels("in")
        self.rtp_bytes_out = self.rtp_bytes.labels("out")
        self.rtp_packets_dropped = Counter(
            "voicegw_rtp_packets_dropped", "RTP/RTCP packets dropped, by reason", ["reason"], registry=r
        )
        self.rtp_port_pool_size = Gauge(
            "voicegw_rtp_port_pool_size", "RTP ports the pool can allocate (capacity)", registry=r
        )
        self.dtmf_digits = Counter("voicegw_dtmf_digits", "DTMF digits received", ["method"], registry=r)
        # -- receive quality, observed once per call at its end from the call's media_stats ----------
        self.rtp_packets_lost = Counter(
            "voicegw_rtp_packets_lost",
            "RTP packets expected but never received (RFC 3550 A.3, duplicates not netted off)",
            registry=r,
        )
        self.rtp_packets_late = Counter(
            "voicegw_rtp_packets_late", "RTP packets that arrived after their playout time", registry=r
        )
        self.rtp_packets_duplicated = Counter(
            "voicegw_rtp_packets_duplicated", "RTP packets received more than once", registry=r
        )
        self.rtp_frames_concealed = Counter(
            "voicegw_rtp_frames_concealed", "20 ms frames concealed (loss, underrun) by the jitter buffer",
            registry=r,
        )
        self.rtp_jitter_seconds = Histogram(
            "voicegw_rtp_jitter_seconds",
            "Interarrival jitter of the caller's stream (RFC 3550 A.8), at call end",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5),
            registry=r,
        )
        self.jitter_buffer_delay_seconds = Histogram(
            "voicegw_jitter_buffer_delay_seconds",
            "Playout delay the jitter buffer held, at call end",
            buckets=(0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1),
            registry=r,
        )
        # -- media (RTP/RTCP endpoint, playout) -------------------------------------------------
        self.rtp_packets_ignored = Counter(
            "voicegw_rtp_packets_ignored",
            "Valid RTP packets not played, by reason (comfort_noise, unknown_payload_type, not_receiving)",
            ["reason"],
            registry=r,
        )
        self.rtcp_packets = Counter("voicegw_rtcp_packets", "RTCP compound packets", ["direction"], registry=r)
        self.rtp_latched = Counter(
            "voicegw_rtp_latched", "Symmetric-RTP latches, by how (signalled or learnt source)", ["how"], registry=r
        )
        self.srtp_errors = Counter(
            "voicegw_srtp_errors", "SRTP/SRTCP packets that failed protect or unprotect (dropped), by direction "
            "(in|out) and kind (rtp|rtcp)", ["direction", "kind"], registry=r,
        )
        self.media_timeouts = Counter("voicegw_rtp_media_timeouts", "Calls ended for lack of RTP", registry=r)
        self.playout_lateness_seconds = Histogram(
            "voicegw_playout_lateness_seconds",
            "Playout tick: actual run time minus its deadline on the 20 ms grid",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
            registry=r,
        )
        self.playout_ticks_skipped = Counter(
            "voicegw_playout_ticks_skipped", "Grid ticks skipped because the loop was more than a tick late",
            registry=r,
        )
        self.playout_streams = Gauge("voicegw_playout_streams", "Streams served by the playout scheduler",
                                     registry=r)
        self.call_mos = Histogram(
            "voicegw_call_mos",
            "Estimated listening MOS (G.107 E-model) of the received audio, at call end",
            buckets=(1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5),
            registry=r,
        )
        self.event_loop_lag_seconds = Histogram(
            "voicegw_event_loop_lag_seconds",
            "Lateness of a periodic event-loop probe",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "voicegw_gc_pause_seconds",
            "Time the process spent in one garbage collection (the event loop and media stand still meanwhile)",
            ["generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
            registry=r,
        )
        self.asyncio_tasks = Gauge("voicegw_asyncio_tasks", "asyncio tasks alive, sampled by the event-loop probe",
                                   registry=r)
        # -- conversation pipeline
        self.turn_latency_seconds = Histogram(
            "voicegw_turn_latency_seconds",
            "Per-turn latency by stage: endpointing (caller's last voiced audio to the end-of-turn decision), "
            "stt_final, llm_first_token, tts_first_byte, gateway_added (end-of-turn decision to our first "
            "voiced RTP minus provider time), voice_to_voice (caller's last voiced audio to our first voiced RTP)",
            ["stage"],
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5),
            registry=r,
        )
        self.barge_ins = Counter("voicegw_barge_ins", "Assistant speech interrupted by the caller", ["reason"],
                                 registry=r)
        self.barge_in_stop_seconds = Histogram(
            "voicegw_barge_in_stop_seconds",
            "Caller voice onset at the gateway to the last assistant RTP packet sent",
            buckets=(0.01, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2, 0.3, 0.5, 1),
            registry=r,
        )
        self.provider_errors = Counter(
            "voicegw_provider_errors", "STT/LLM/TTS provider failures", ["provider", "kind"], registry=r
        )
        self.provider_latency_seconds = Histogram(
            "voicegw_provider_latency_seconds",
            "Request to first result, by provider and stage (stt_final, llm_first_token, tts_first_byte)",
            ["provider", "stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
            registry=r,
        )
        self.pipeline_frames_dropped = Counter(
            "voicegw_pipeline_frames_dropped", "Caller audio frames dropped before STT, by reason", ["reason"],
            registry=r,
        )
        # control plane
        self.assistant_requests = Counter(
            "voicegw_assistant_requests", "assistant-request exchanges, by result (assistant, transfer, error, "
            "failed)", ["result"], registry=r,
        )
        self.assistant_request_seconds = Histogram(
            "voicegw_assistant_request_seconds", "assistant-request POST to its answer (or the timeout)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 7.5, 15), registry=r,
        )
        self.webhook_deliveries = Counter(
            "voicegw_webhook_deliveries", "Server message delivery attempts, by result (delivered, retry, "
            "failed: given up)", ["result"], registry=r,
        )
        self.webhook_outbox_depth = Gauge(
            "voicegw_webhook_outbox_depth", "Server messages waiting in the outbox", registry=r
        )
        self.webhook_delivery_seconds = Histogram(
            "voicegw_webhook_delivery_seconds", "Server message enqueued to delivered (including retries)",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600), registry=r,
        )
        self.tool_calls = Counter(
            "voicegw_tool_calls", "Tool calls by tool type and result (ok, failed, timeout)", ["type", "result"],
            registry=r,
        )
        self.transfers = Counter(
            "voicegw_transfers", "Call transfers by mode (blind, warm) and result (completed, refer-refused, "
            "bridged, failed, refused-destination)", ["mode", "result"], registry=r,
        )
        self.dtmf_sent = Counter("voicegw_dtmf_digits_sent", "DTMF digits sent (RFC 4733 or SIP INFO)", ["method"],
                                 registry=r)
        self.api_requests = Counter(
            "voicegw_api_requests", "HTTP API requests by route template and status class", ["route", "status_class"],
            registry=r,
        )


def status_class(code: int) -> str:
    return f"{code // 100}xx"
