"""Compile the per-packet media path with mypyc (``make`` runs this after installing the package).

The modules below are ordinary, fully typed Python (plus one small C helper, the RTP pacer's timed sends); mypyc turns them into C extensions placed next to their
sources, which Python then imports instead of the ``.py`` files. Every RTP packet of every call goes through
them (receive, statistics, jitter buffer, concealment, G.711, playout, send), and compiled they cost about half
the CPU (``benchmarks/bench_media_core.py --native-ab``). Nothing else changes: the sources stay the
reference, the tests run against the compiled modules, and ``VOICEGW_NATIVE=0`` runs the sources instead.

The build writes ``gateway/_native_build.json`` with a hash of each compiled source; ``gateway/native.py``
checks it at import and falls back to the sources (with a warning) when any of them changed since, so an
edited ``.py`` file is never shadowed by an older compiled one. A failed build (no C compiler, a mypyc error)
leaves the pure-Python package in place and exits non-zero with the reason.

Usage: .venv/bin/python build_native.py [--clean]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCES = (
    "gateway/rtp/packet.py",
    "gateway/rtp/stats.py",
    "gateway/rtp/jitter.py",
    "gateway/rtp/rtcp.py",
    "gateway/rtp/session.py",
    "gateway/rtp/dtmf.py",
    "gateway/codecs/g711.py",
    "gateway/codecs/plc.py",
    "gateway/transport/playout.py",
    "gateway/transport/rtp_endpoint.py",
    "gateway/call_media.py",
)
# Hand-written C, built beside them: the RTP pacer's timed sends (gateway/transport/pacer.py).
C_EXTENSIONS = {"gateway.transport._pacer": "gateway/transport/_pacer.c"}
GROUP = "gateway.native"  # the shared library: gateway/native__mypyc.*.so
MANIFEST = ROOT / "gateway" / "_native_build.json"
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean() -> None:
    """Remove what an earlier build left, so a failed build cannot leave a mix of old and new extensions."""
    MANIFEST.unlink(missing_ok=True)
    for source in SOURCES:
        for built in (ROOT / source).parent.glob(Path(source).stem + ".*.so"):
            built.unlink()
    for built in (ROOT / "gateway").glob("native__mypyc.*.so"):
        built.unlink()
    for name in C_EXTENSIONS:
        for built in (ROOT / name.replace(".", "/")).parent.glob(name.rsplit(".", 1)[1] + ".*.so"):
            built.unlink()


def build() -> None:
    from mypyc.build import mypycify  # the dev extra's mypy; imported late so --clean works without it
    from setuptools import Extension, setup

    os.chdir(ROOT)
    extensions = mypycify(list(SOURCES), opt_level="3", group_name=GROUP, target_dir="build/native")
    extensions += [Extension(name, [source], extra_compile_args=["-O2", "-Wall"])
                   for name, source in C_EXTENSIONS.items()]
    setup(
        name="voicegw-native",
        ext_modules=extensions,
        script_args=["-q", "build_ext", "--inplace", "--build-temp", "build/native/temp"],
    )
    built = [*SOURCES, *(name.replace(".", "/") + ".c" for name in C_EXTENSIONS)]
    missing = [s for s in built if not (ROOT / s).with_suffix(SUFFIX).exists()]
    if missing:
        raise RuntimeError(f"the build produced no extension for {', '.join(missing)}")
    MANIFEST.write_text(json.dumps({
        "suffix": SUFFIX,
        "sources": {s: source_hash(ROOT / s) for s in built},
    }, indent=1) + "\n")


def main() -> int:
    clean()
    if "--clean" in sys.argv[1:]:
        return 0
    try:
        build()
    except (Exception, SystemExit) as exc:  # setuptools reports a compiler failure as SystemExit
        clean()
        print(f"build_native: the media path stays pure Python: {exc!r}", file=sys.stderr)
        return 1
    print(f"build_native: compiled {len(SOURCES)} modules and {len(C_EXTENSIONS)} C helper ({SUFFIX})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
