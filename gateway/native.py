"""Compiled or pure Python: which implementation of the media path this process runs.

``build_native.py`` (run by ``make``) compiles the per-packet media modules with mypyc into extensions next to
their sources and records a hash of each source in ``_native_build.json``. Imported first by the package, this
module decides once per process:

- ``compiled``: the manifest matches every source, Python imports the extensions (its default preference);
- ``stale``: a source changed since the build, the whole group is imported from the ``.py`` files (the compiled
  modules call each other directly, so they are used all together or not at all), with a warning;
- ``disabled``: ``VOICEGW_NATIVE=0`` asks for the sources (A/B benchmarks, the parity test, debugging);
- ``python``: nothing was compiled (no build, or the build failed).

Standard library only, and nothing here runs per packet.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["MODULES", "STATUS", "SourceFirst", "decide"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_ROOT = _PACKAGE_DIR.parent
_MANIFEST = _PACKAGE_DIR / "_native_build.json"


class SourceFirst(importlib.abc.MetaPathFinder):
    """Import the named modules from their ``.py`` files even where a compiled extension sits beside them."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self._sources = sources

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self._sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def decide(manifest: Path, root: Path, environ: Mapping[str, str]) -> tuple[str, dict[str, Path], list[str]]:
    """(status, the compiled modules' names → their sources, the sources changed since the build)."""
    try:
        recorded: dict[str, str] = json.loads(manifest.read_text())["sources"]
    except FileNotFoundError:
        return "python", {}, []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"voicegw: unreadable {manifest} ({exc!r}); using the Python media path",
                      RuntimeWarning, stacklevel=2)
        return "python", {}, []
    # .py sources have a compiled twin to bypass; C helpers (hashed too) are used only while "compiled"
    paths = {_module_name(source): root / source for source in recorded if source.endswith(".py")}
    if environ.get("VOICEGW_NATIVE", "1") == "0":
        return "disabled", paths, []
    changed = []
    for source, digest in recorded.items():
        try:
            current = hashlib.sha256((root / source).read_bytes()).hexdigest()
        except OSError:
            current = ""
        if current != digest:
            changed.append(source)
    return ("stale" if changed else "compiled"), paths, changed


def _apply() -> tuple[str, tuple[str, ...]]:
    status, paths, changed = decide(_MANIFEST, _ROOT, os.environ)
    if changed:
        warnings.warn(f"voicegw: {', '.join(changed)} changed since the media path was compiled; running the "
                      "Python sources (make install rebuilds it)", RuntimeWarning, stacklevel=2)
    if status in ("stale", "disabled"):
        sys.meta_path.insert(0, SourceFirst(paths))
    return status, tuple(paths)


STATUS, MODULES = _apply()
