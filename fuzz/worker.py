"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.worker TARGET [libFuzzer flags] [corpus dirs]``.

The gateway's parser modules are imported under atheris instrumentation so that libFuzzer's mutations
are guided by the branches they reach. A crash (any exception other than the parser's own protocol
error) or a hang is reported by libFuzzer, which writes the input to ``-artifact_prefix``.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

with atheris.instrument_imports(include=["gateway", "fuzz.targets"]):
    from fuzz.targets import TARGETS


def main() -> None:
    name = sys.argv[1]
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
