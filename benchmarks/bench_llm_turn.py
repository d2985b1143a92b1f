"""CPU cost of one conversational turn's LLM request in the gateway process: ``OpenAiLlm.stream`` read to its
end against the local fake of OpenAI's streaming chat completions (tests/fakes/openai_server.py, replying
at once), run as its own process so that only the client side is measured.

Each turn sends the whole history, as a call does: a system prompt, 12 prior messages (one tool call and its
result among them) and two tool specs to start with; each turn appends the assistant's reply and the
caller's next utterance, so the request grows by two messages per turn. The reply is about 40 tokens
(159 characters in 4-character deltas, plus the role, finish and usage chunks and ``[DONE]``).

The figure is CPU time (``time.process_time``) per turn, averaged over a repeat's turns, median of repeats.
The HTTP connection is opened by one warm-up turn before measuring (kept alive, as in a call).

A/B mode: ``--baseline DIR`` (a directory holding an older ``gateway/`` package, e.g. from
``git archive REV gateway | tar -x -C DIR``) measures that tree and this one in alternating subprocesses
against one fake server and prints the ratio of medians: on a shared, noisy machine only figures taken side
by side compare.

Usage: .venv/bin/python benchmarks/bench_llm_turn.py [--turns N] [--repeats R]
       .venv/bin/python benchmarks/bench_llm_turn.py --baseline DIR [--rounds K]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# --source DIR (used by the A/B mode) puts another tree's ``gateway`` package first on the path.
SOURCE = Path(sys.argv[sys.argv.index("--source") + 1]) if "--source" in sys.argv else REPO
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SOURCE))

from ab import alternate  # noqa: E402 - benchmarks/ab.py
from machine import git_revision  # noqa: E402 - benchmarks/machine.py

from gateway.providers.base import ChatMessage, LlmOptions, TextDelta, ToolCall, ToolSpec  # noqa: E402
from gateway.providers.openai_llm import OpenAiLlm  # noqa: E402

MEASURED = ("gateway/providers/openai_llm.py", "benchmarks/bench_llm_turn.py")
STEP = "OpenAiLlm.stream per turn"
KEY = "sk-bench"
REPLY = ("Sure, I can help with that. Tuesday at ten in the morning is free with Doctor Patel; shall I book "
         "the cleaning for you and send a text reminder the day before?")  # 159 characters, ~40 tokens
BOOK = ToolSpec(name="book_appointment", description="Book a dental appointment for the caller.",
                parameters={"type": "object", "properties": {
                    "day": {"type": "string", "description": "Weekday or date."},
                    "time": {"type": "string", "description": "HH:MM, 24 h."},
                    "service": {"type": "string", "enum": ["cleaning", "checkup", "filling"]}},
                    "required": ["day", "service"]})
TRANSFER = ToolSpec(name="transfer_call", description="Transfer the caller to the front desk.")
TOOLS = (BOOK, TRANSFER)
OPTIONS = LlmOptions(model="gpt-4o-mini", temperature=0.4, max_tokens=200)


def prior_history() -> list[ChatMessage]:
    """A system prompt and 12 prior messages, one tool call round among them."""
    call = ToolCall(id="call_1", name="book_appointment", arguments='{"day": "Monday", "service": "checkup"}')
    return [
        ChatMessage(role="system", content="You are the front desk of Acme Dental. Be brief and friendly. "
                    "Offer appointments between 9:00 and 17:00 on weekdays; never give medical advice."),
        ChatMessage(role="assistant", content="Hello, Acme Dental, how can I help you today?"),
        ChatMessage(role="user", content="Hi, I'd like to book a checkup for Monday please."),
        ChatMessage(role="assistant", content=None, tool_calls=(call,)),
        ChatMessage(role="tool", content='{"booked": false, "reason": "Monday is full"}', tool_call_id="call_1"),
        ChatMessage(role="assistant", content="Monday is fully booked, I'm afraid. Would another day work?"),
        ChatMessage(role="user", content="Hmm, what about later in the week?"),
        ChatMessage(role="assistant", content="Wednesday afternoon and Thursday morning have openings."),
        ChatMessage(role="user", content="Thursday morning could work. How long does it take?"),
        ChatMessage(role="assistant", content="A checkup takes about thirty minutes."),
        ChatMessage(role="user", content="And can I also get a cleaning at the same time?"),
        ChatMessage(role="assistant", content="Yes, a cleaning adds another thirty minutes."),
        ChatMessage(role="user", content="Great. Actually, is Tuesday possible instead?"),
    ]


async def _measure(url: str, turns: int, repeats: int) -> list[float]:
    llm = OpenAiLlm(KEY, f"{url}/v1")

    async def turn(history: list[ChatMessage]) -> str:
        text = []
        async for event in llm.stream(history, tools=TOOLS, options=OPTIONS):
            if isinstance(event, TextDelta):
                text.append(event.text)
        return "".join(text)

    if await turn(prior_history()) != REPLY:  # warm-up: the connection, first-use imports
        raise RuntimeError("the fake server did not answer with the scripted reply")
    runs: list[float] = []
    for _ in range(repeats):
        history = prior_history()
        start = time.process_time()
        for i in range(turns):
            reply = await turn(history)
            history.append(ChatMessage(role="assistant", content=reply))
            history.append(ChatMessage(role="user", content=f"Okay. And one more question, number {i}?"))
        runs.append((time.process_time() - start) / turns * 1e6)
    await llm.aclose()
    return runs


@contextlib.contextmanager
def fake_server() -> Iterator[str]:
    """The fake OpenAI server as its own process; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--reply", REPLY,
                             "--api-key", KEY, "--chunk-size", "4"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the fake server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(10)


def bench(url: str, turns: int, repeats: int) -> tuple[float, float]:
    runs = asyncio.run(_measure(url, turns, repeats))
    return statistics.median(runs), min(runs)


def compare(baseline: Path, turns: int, repeats: int, rounds: int) -> None:
    """``baseline`` and this tree in alternating subprocesses against one fake server; ratio of medians."""
    with fake_server() as url:
        ab = alternate(Path(__file__), ["--one", "--url", url, "--turns", str(turns), "--repeats", str(repeats)],
                       baseline, REPO, rounds)
    base, cur = statistics.median(ab.baseline), statistics.median(ab.current)
    print(f"{STEP}: baseline {base:.0f} µs, current {cur:.0f} µs, current/baseline {ab.ratio:.3f} "
          f"({rounds} alternating rounds; baseline {baseline}, current {git_revision(MEASURED)} + working tree)")
    print(f"  baseline runs: {', '.join(f'{v:.0f}' for v in ab.baseline)}")
    print(f"  current runs:  {', '.join(f'{v:.0f}' for v in ab.current)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20, help="turns per repeat (the history grows each turn)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="A/B: a directory holding an older gateway/ package")
    parser.add_argument("--rounds", type=int, default=5, help="A/B: alternating subprocess rounds")
    parser.add_argument("--url", help="a running fake server's base URL (default: start one)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline is not None:
        compare(args.baseline, args.turns, args.repeats, args.rounds)
        return
    with contextlib.nullcontext(args.url) if args.url else fake_server() as url:
        median, best = bench(url, args.turns, args.repeats)
    if args.one:
        print(f"{median:.4f}")
        return
    print(f"{STEP}: median {median:.0f} µs, best {best:.0f} µs ({args.turns} turns from 13 messages, a "
          f"{len(REPLY)}-character reply; revision {git_revision(MEASURED)})")


if __name__ == "__main__":
    main()
