"""The compiled media path (build_native.py, gateway/native.py): in use after `make`, identical to the sources,
and never shadowing an edited source."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import gateway
from gateway.native import SourceFirst, decide

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "tests" / "helpers" / "media_trace.py"
PYTHON_ONLY = os.environ.get("VOICEGW_NATIVE") == "0"  # `make test NATIVE=0`


def trace(native: str) -> dict[str, object]:
    env = {**os.environ, "VOICEGW_NATIVE": native}
    out = subprocess.run([sys.executable, str(TRACE)], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])  # log lines come first
    return result


def test_the_media_path_runs_compiled_after_make() -> None:
    if PYTHON_ONLY:
        assert gateway.native.STATUS in ("disabled", "python")
        return
    assert gateway.native.STATUS == "compiled", "build_native.py did not run or failed: `make install` rebuilds"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in gateway.native.MODULES:
        module = __import__(name, fromlist=["_"])
        assert module.__file__ is not None and module.__file__.endswith(suffix), name


def test_compiled_and_python_media_paths_send_the_same_bytes() -> None:
    python = trace("0")
    compiled = trace("1")
    assert python["status"] in ("disabled", "python")
    if not PYTHON_ONLY:
        assert compiled["status"] == "compiled"
    # the trace exercises what could differ: loss, duplicates, reordering, a new SSRC, DTMF, RTCP
    stats = python["stats"]
    assert isinstance(stats, dict)
    assert len(python["sent"]) > 1400 and len(python["rtcp"]) >= 5  # type: ignore[arg-type]
    assert stats["jitter_buffer"]["frames_concealed"] > 0 and stats["receiver"]["duplicates"] > 0
    assert stats["receiver"]["ssrc_changes"] == 1 and python["digits"] == ["5"]
    assert compiled["sent"] == python["sent"]
    assert compiled["rtcp"] == python["rtcp"]
    assert compiled["stats"] == python["stats"]
    assert compiled["digits"] == python["digits"]


def _manifest(tmp_path: Path, text: str) -> Path:
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text(text)
    manifest = tmp_path / "manifest.json"
    digest = hashlib.sha256(text.encode()).hexdigest()
    manifest.write_text(json.dumps({"sources": {"pkg/mod.py": digest}}))
    return manifest


def test_an_edited_source_is_not_shadowed_by_its_older_build(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "X = 1\n")
    assert decide(manifest, tmp_path, {}) == ("compiled", {"pkg.mod": tmp_path / "pkg" / "mod.py"}, [])
    (tmp_path / "pkg" / "mod.py").write_text("X = 2\n")
    assert decide(manifest, tmp_path, {}) == ("stale", {"pkg.mod": tmp_path / "pkg" / "mod.py"}, ["pkg/mod.py"])
    (tmp_path / "pkg" / "mod.py").unlink()
    assert decide(manifest, tmp_path, {})[0] == "stale"


def test_no_build_and_an_explicit_opt_out(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "X = 1\n")
    assert decide(manifest, tmp_path, {"VOICEGW_NATIVE": "0"})[0] == "disabled"
    assert decide(tmp_path / "missing.json", tmp_path, {}) == ("python", {}, [])
    manifest.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert decide(manifest, tmp_path, {}) == ("python", {}, [])


def test_the_source_finder_loads_the_py_file_beside_an_extension(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("X = 1\n")
    (tmp_path / f"mod{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"not an extension")
    spec = SourceFirst({"vgw_test_mod": source}).find_spec("vgw_test_mod")
    assert spec is not None and spec.origin == str(source)
    assert SourceFirst({"vgw_test_mod": source}).find_spec("other") is None
