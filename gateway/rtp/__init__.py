"""RTP media core (sans-IO): RFC 3550 packets, statistics and RTCP; RFC 4733 DTMF.

Modules: ``packet`` (``RtpPacket``, RFC 5761 demux, sequence arithmetic), ``stats``
(RFC 3550 A.1/A.3/A.8 ``ReceiverStats``), ``rtcp`` (SR/RR/SDES/BYE), ``session``
(``RtcpSession`` scheduling), ``mos`` (G.107 E-model), ``dtmf`` (telephone-event),
``jitter`` (the jitter buffer). RTP knows nothing of SDP: it is given payload types,
clock rates and ptime.
"""
