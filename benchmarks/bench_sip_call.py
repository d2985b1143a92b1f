"""CPU cost of one call's signalling in the gateway process, without sockets or media.

One call: a SIPp-like INVITE with an SDP offer enters ``UserAgent._on_datagram`` (parse, admission, metrics,
server transaction and its 100 Trying), the handler answers 180 and 200 with an SDP answer
(``gateway.sdp.answer``) and creates the UAS dialog, then the ACK and a BYE arrive (in-dialog dispatch, 200 OK).
Responses go to a transport that keeps nothing; the UA's one timer lives on an event loop that never runs it.
The figure is CPU time (``time.process_time``) per call, the median of several repeats.

A/B mode: ``--baseline DIR`` (e.g. ``git archive REV gateway | tar -x -C DIR``) measures that tree and this one
in alternating subprocesses and prints the ratio of medians: on a shared, noisy machine only figures taken side
by side compare.

Usage: .venv/bin/python benchmarks/bench_sip_call.py [--calls N] [--repeats R]
       .venv/bin/python benchmarks/bench_sip_call.py --baseline DIR [--rounds K]
       .venv/bin/python benchmarks/bench_sip_call.py --profile (cProfile of the hot path, top functions)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path(sys.argv[sys.argv.index("--source") + 1]) if "--source" in sys.argv else REPO
sys.path.insert(0, str(SOURCE))

from gateway.config import load_config_text  # noqa: E402
from gateway.observability.metrics import Metrics  # noqa: E402
from gateway.sdp import LocalSession, answer, parse_sdp, serialize_sdp  # noqa: E402
from gateway.sip.dialog import Dialog  # noqa: E402
from gateway.sip.message import Request, make_response  # noqa: E402
from gateway.sip.transaction import ServerTransactionId  # noqa: E402
from gateway.ua import UserAgent  # noqa: E402

PEER = ("127.0.0.1", 5598)
CONFIG = """
sip: {listen: "127.0.0.1:5060"}
assistants: {demo: {firstMessage: Hi, model: {provider: rules}}}
numbers: [{number: "100", assistant: demo}]
security: {trusted_sources: ["127.0.0.1/32"], hide_unknown_numbers: false}
log: {level: info}
"""
OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(n: int) -> bytes:
    return (
        f"INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5598;branch=z9hG4bK-1-{n}-0\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5598>;tag={n}SIPpTag00{n}\r\n"
        f"To: 100 <sip:100@127.0.0.1:5060>\r\n"
        f"Call-ID: {n}-26934@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: sip:sipp@127.0.0.1:5598\r\n"
        "Max-Forwards: 70\r\n"
        "Subject: Performance Test\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(OFFER)}\r\n\r\n{OFFER}"
    ).encode()


def in_dialog(n: int, method: str, cseq: int, branch: str, to_tag: str) -> bytes:
    return (
        f"{method} sip:100@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5598;branch=z9hG4bK-1-{n}-{branch}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5598>;tag={n}SIPpTag00{n}\r\n"
        f"To: 100 <sip:100@127.0.0.1:5060>;tag={to_tag}\r\n"
        f"Call-ID: {n}-26934@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: sip:sipp@127.0.0.1:5598\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Call:
    """The UAS side of one call, as gateway.call.Call answers it (without media and tasks)."""

    def __init__(self, ua: UserAgent, request: Request, capabilities: Any) -> None:
        self.ua = ua
        self.tag = self.local_tag = ua.new_tag()
        ua.respond(request, 180, to_tag=self.tag, headers=[("Contact", str(ua.contact("udp")))])
        offer = parse_sdp(request.body)
        local, _ = answer(offer, capabilities, local_host="127.0.0.1", local_port=20000,
                          session=LocalSession(session_id=1, address="127.0.0.1"))
        response = make_response(request, 200, to_tag=self.tag, body=serialize_sdp(local),
                                 headers=[("Contact", str(ua.contact("udp"))), *ua.common_headers(),
                                          ("Content-Type", "application/sdp")])
        ua.send_response(response)
        self.dialog = Dialog.create_uas(request, response, local_contact=ua.contact("udp"))
        self.key = (request.call_id, self.tag, request.from_.tag or "")
        ua.register_dialog(self.key, self)

    def on_request(self, request: Request, server_tx: ServerTransactionId) -> None:
        self.dialog.receive_request(request)
        self.ua.respond(request, 200)
        self.ua.unregister_dialog(self.key)

    def on_ack(self, request: Request) -> None:
        pass

    def on_ack_timeout(self) -> None:
        pass

    def on_cancel(self, server_tx: ServerTransactionId) -> None:
        pass

    def on_2xx_retransmission(self, response: Any) -> None:
        pass


class Handler:
    def __init__(self, ua: UserAgent) -> None:
        from gateway.call import codec_specs
        from gateway.codecs.registry import CodecRegistry

        self.ua = ua
        self.capabilities = codec_specs(CodecRegistry().capabilities())
        self.last: Call | None = None

    def on_invite(self, request: Request, server_tx: ServerTransactionId, source: Any, transport: str) -> None:
        self.last = Call(self.ua, request, self.capabilities)
        self.ua.unregister_invite_server(server_tx)


def measure(calls: int, repeats: int, profile: bool = False) -> float:
    """Median CPU µs per call."""
    runs: list[float] = []

    async def main() -> None:
        ua = UserAgent(load_config_text(CONFIG, env={}), Metrics(), cast(Any, None))
        ua.transport.send = lambda data, destination, transport: None  # type: ignore[method-assign]
        handler = Handler(ua)
        ua.invite_handler = handler
        n = 0

        def one_call() -> None:
            nonlocal n
            n += 1
            ua._on_datagram(invite(n), PEER, "udp")
            call = handler.last
            assert call is not None
            ua._on_datagram(in_dialog(n, "ACK", 1, "5", call.tag), PEER, "udp")
            ua._on_datagram(in_dialog(n, "BYE", 2, "6", call.tag), PEER, "udp")

        for _ in range(200):  # warm-up
            one_call()
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(calls):
                one_call()
            prof.disable()
            stats = pstats.Stats(prof).sort_stats("tottime")
            stats.print_stats(30)
            stats.print_callers(12)
            return
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(calls):
                one_call()
            runs.append((time.process_time() - start) / calls * 1e6)
        if ua._timer is not None:
            ua._timer.cancel()

    asyncio.run(main())
    return statistics.median(runs) if runs else 0.0


def ab(baseline: Path, rounds: int, calls: int, repeats: int) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from ab import alternate  # benchmarks/ab.py (not importable from a baseline tree: imported here)

    result = alternate(Path(__file__), ["--calls", str(calls), "--repeats", str(repeats), "--quiet"], baseline,
                       REPO, rounds)
    print(f"baseline {baseline}: {[round(x) for x in result.baseline]} µs/call")
    print(f"this tree: {[round(x) for x in result.current]} µs/call")
    print(f"ratio of medians (this / baseline): {result.ratio:.3f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--source", type=Path)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.baseline is not None:
        ab(args.baseline, args.rounds, args.calls, args.repeats)
    elif args.profile:
        measure(args.calls, 1, profile=True)
    else:
        us = measure(args.calls, args.repeats)
        print(f"{us:.1f}" if args.quiet else f"one call's signalling: {us:.1f} µs CPU (median of {args.repeats})")


if __name__ == "__main__":
    cli()
