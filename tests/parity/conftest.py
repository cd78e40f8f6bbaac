"""Session fixture running the NeMo oracle (tests/parity/nemo_oracle.py) once and caching its output.

The oracle needs ``nemo-toolkit[asr]==3.0.0`` (``pip install -e .[test]``). It runs in a subprocess
(``sys.executable``) into ``<cache>/babelcast/parity/<key>/`` where ``<cache>`` is ``$BABELCAST_PARITY_CACHE`` if
set, else ``$XDG_CACHE_HOME`` or ``~/.cache``, and ``<key>`` hashes nemo_oracle.py, configs/*.yaml and the
installed versions of nemo-toolkit, torch and sentencepiece. An existing ``reference.pt`` there is reused.

Without NeMo the fixture fails (never skips silently) unless ``BABELCAST_SKIP_NEMO=1``, which makes it skip.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARITY_DIR = Path(__file__).resolve().parent
ORACLE = PARITY_DIR / "nemo_oracle.py"
CONFIG_DIR = PARITY_DIR / "configs"
ORACLE_TIMEOUT_S = 900

INSTALL_HINT = "install the test extras with `pip install -e .[test]` (nemo-toolkit[asr]==3.0.0)"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nemo_problem() -> str | None:
    """Why the NeMo oracle cannot run here, or None. Cheap: does not import NeMo."""
    if _version("nemo-toolkit") is None and _version("nemo_toolkit") is None:
        return "nemo-toolkit is not installed"
    for mod in ("nemo", "sentencepiece", "torch"):
        if importlib.util.find_spec(mod) is None:
            return f"module {mod!r} is not importable"
    return None


def _cache_key() -> str:
    h = hashlib.sha256()
    for path in [ORACLE, *sorted(CONFIG_DIR.glob("*.yaml"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for dist in ("nemo-toolkit", "torch", "sentencepiece"):
        h.update(f"{dist}={_version(dist)}".encode())
    return h.hexdigest()[:20]


def _cache_root() -> Path:
    if os.environ.get("BABELCAST_PARITY_CACHE"):
        return Path(os.environ["BABELCAST_PARITY_CACHE"])
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "babelcast" / "parity"


def _run_oracle(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(ORACLE), str(work)],
        capture_output=True,
        text=True,
        timeout=ORACLE_TIMEOUT_S,
        cwd=str(PARITY_DIR),
    )
    if proc.returncode != 0 or not (work / "reference.pt").exists():
        shutil.rmtree(work, ignore_errors=True)
        out = (proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-6000:]).strip()
        hint = ""
        if "ModuleNotFoundError" in proc.stderr or "ImportError" in proc.stderr:
            hint = f"\nNeMo (or one of its dependencies) failed to import: {INSTALL_HINT}."
        pytest.fail(f"NeMo oracle failed (exit {proc.returncode}) after {time.time() - t0:.0f}s:{hint}\n{out}")
    try:
        work.rename(target)  # atomic; loses the race gracefully if another process finished first
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        if not (target / "reference.pt").exists():
            raise


@pytest.fixture(scope="session")
def nemo_reference():
    """The oracle's reference dict (see the nemo_oracle.py docstring); ``nemo_path`` points into the cache."""
    problem = _nemo_problem()
    if problem is not None:
        msg = f"NeMo parity oracle unavailable ({problem}): {INSTALL_HINT}."
        if os.environ.get("BABELCAST_SKIP_NEMO") == "1":
            pytest.skip(f"BABELCAST_SKIP_NEMO=1: {msg}")
        pytest.fail(f"{msg} Set BABELCAST_SKIP_NEMO=1 to skip the NeMo parity tests instead.", pytrace=False)

    import torch

    target = _cache_root() / _cache_key()
    if not (target / "reference.pt").exists():
        _run_oracle(target)
    ref = torch.load(target / "reference.pt", map_location="cpu", weights_only=False)
    for entry in ref["models"].values():
        entry["nemo_path"] = str(target / Path(entry["nemo_path"]).name)
    ref["cache_dir"] = str(target)
    return ref
