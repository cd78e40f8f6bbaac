"""Every subcommand, run as a user would (a subprocess), with ordinary mistakes: one `error:` line naming the
problem, exit 2 for a bad option and 1 for failed work, and never a traceback."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "samples" / "de-DE.wav")


def babelcast(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m babelcast ARGS`, output captured."""
    return subprocess.run([sys.executable, "-m", "babelcast", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def junk(tmp_path_factory) -> dict[str, str]:
    """A text file named .mp3 and a path that does not exist."""
    folder = tmp_path_factory.mktemp("junk")
    (folder / "song.mp3").write_text("not audio at all\n" * 50)
    return {"fake_mp3": str(folder / "song.mp3"), "missing": str(folder / "missing.wav"), "dir": str(folder)}


@pytest.fixture(scope="module")
def busy_port():
    """A port something already listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


MISTAKES = {  # name: (argv with {placeholders}, exit code, what the error line must say)
    "transcribe --device cuda": (["transcribe", SAMPLE, "--device", "cuda"], 2, "--device cuda: "),
    "transcribe text file named .mp3": (["transcribe", "{fake_mp3}"], 1, "content is not audio"),
    "transcribe missing file": (["transcribe", "{missing}"], 1, "file not found"),
    "transcribe unknown language": (["transcribe", SAMPLE, "--lang", "xx-XX"], 2, "aliases: "),
    "transcribe --ray auto without RAY_ADDRESS": (["transcribe", SAMPLE, "--ray", "auto"], 1, "RAY_ADDRESS is not set"),
    "transcribe bad boost weight": (["transcribe", SAMPLE, "--boost", "Anna:lots"], 2, "bad weight 'lots'"),
    "stream empty boost phrase": (["stream", SAMPLE, "--boost", " ", "--url", "ws://127.0.0.1:9"], 2,
                                  "empty boost phrase"),
    "transcribe missing model": (["transcribe", SAMPLE, "--model", "{missing}.nemo"], 2, "cannot load model"),
    "train without its data": (["train", str(ROOT / "configs" / "demo.yaml"), "--out-dir", "{dir}/run"], 1,
                               "scripts/train_demo.sh data"),
    "train config that is not YAML": (["train", "{fake_mp3}"], 2, "configs/demo.yaml"),
    "finetune missing model": (["finetune", "--model", "{missing}.nemo", "--train", "{missing}.jsonl", "--out",
                                "{dir}/ft.nemo"], 2, "no such file"),
    "eval missing manifest": (["eval", "{missing}.jsonl", "--out-dir", "{dir}/eval"], 2, "manifest not found"),
    "serve port out of range": (["serve", "--port", "99999"], 2, "out of range"),
    "serve busy port": (["serve", "--port", "{busy_port}"], 1, "cannot listen on 127.0.0.1:"),
    "serve busy gRPC port": (["serve", "--port", "0", "--grpc-port", "{busy_port}"], 1, "pass --grpc-port with another"),
    "serve gRPC on the HTTP port": (["serve", "--port", "8123", "--grpc-port", "8123"], 2, "both 8123"),
    "serve two models without --ray": (["serve", "--model", "a=a.nemo", "--model", "b=b.nemo"], 2, "need --ray"),
    "serve replicas range backwards": (["serve", "--ray", "local", "--replicas", "3-1"], 2, "1 <= MIN <= MAX"),
    "serve unknown model option": (["serve", "--model", "m.nemo,precision=fp64"], 2, "precision must be one of"),
    "serve two models of one name": (["serve", "--ray", "local", "--model", "x/m.nemo", "--model", "y/m.nemo"], 2,
                                     "two models are named 'm'"),
    "stream missing file": (["stream", "{missing}", "--url", "ws://127.0.0.1:9"], 1, "file not found"),
    "data synth unknown locale": (["data", "synth", "--langs", "xx-XX", "--n", "1", "--out", "{dir}/d"], 2,
                                  "xx-XX"),
    "bench missing model": (["bench", "streams", "--model", "{missing}.nemo"], 2, "no such file"),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_an_ordinary_mistake_gets_one_error_line_and_no_traceback(name, junk, busy_port):
    argv, exit_code, says = MISTAKES[name]
    done = babelcast(*(a.format(busy_port=busy_port, **junk) for a in argv), cwd=Path(junk["dir"]))
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if re.match(r"(babelcast[\w ]*: )?error: ", line)]
    assert len(errors) == 1 and says in errors[0], done.stderr
    assert done.returncode == exit_code, done.stderr


def test_version():
    done = babelcast("--version")
    assert done.returncode == 0 and done.stdout.startswith("babelcast 0.")


def test_a_reader_that_leaves_early_is_not_a_traceback(tmp_path):
    """`babelcast transcribe samples/*.wav | head -n 1`: later lines meet a closed pipe."""
    samples = sorted(str(p) for p in (ROOT / "samples").glob("*.wav"))
    err = tmp_path / "err.txt"
    command = f"{sys.executable} -m babelcast transcribe {' '.join(samples)} --batch-size 1 2>{err} | head -n 1"
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in err.read_text() and "BrokenPipeError" not in err.read_text(), err.read_text()


def test_a_missing_optional_package_names_its_extra():
    from babelcast.cli_errors import EXIT_FAILED, describe, exit_code_of

    missing = ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
    assert exit_code_of(missing) == EXIT_FAILED
    assert describe(missing) == ("this command needs the uvicorn package: run scripts/setup.sh, or pip install "
                                 "'babelcast[server]'")
    assert exit_code_of(ModuleNotFoundError("No module named 'nope'", name="nope")) is None  # a bug: traceback
