"""The README's examples are what the code does: the first command's quoted output, and the Python block run
as written."""
from __future__ import annotations

import re
from pathlib import Path


from babelcast.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block_after(marker: str) -> str:
    """The first fenced block after `marker` in the README."""
    return re.search(re.escape(marker) + r"\n```[a-z]*\n(.*?)```", README, re.S).group(1)


def test_the_first_commands_quoted_output_is_its_output(monkeypatch, capsys):
    assert "scripts/setup.sh && .venv/bin/babelcast transcribe samples/*.wav\n.venv/bin/babelcast serve --open" \
        in README
    monkeypatch.chdir(ROOT)
    samples = sorted(f"samples/{p.name}" for p in (ROOT / "samples").glob("*.wav"))  # the shell's glob order
    assert main(["transcribe", *samples]) == 0
    out = capsys.readouterr().out
    assert out == block_after("<!-- transcribe-samples -->")
    spanish = next(line for line in out.splitlines() if line.startswith("samples/es-US.wav: "))
    assert f'e.g. "{spanish.split(": ", 1)[1]}" for\n`samples/es-US.wav`' in README  # the demo section's example


def test_the_python_block_runs_as_written(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = block_after("## Python\n")
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Nicht für die Schule, sondern für das Leben lernen wir."
    assert lines[1].startswith("es-US ") and len(lines) == 4
