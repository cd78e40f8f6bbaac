"""Data-parallel training: two processes, one batch each per step, train exactly like one process
accumulating the same two batches, also across a resume."""
from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from babelcast.train.config import parse_train_config
from babelcast.train.parallel import train_in_processes
from babelcast.train.run import run_tokenizer, trainer_from_scratch
from babelcast.train.tokenizer import tags_in, train_tokenizer

from test_train_loop import manifests  # noqa: F401 (fixture)
from train_fixtures import make_trainer, one_thread, tiny_train_config  # noqa: F401 (autouse fixture)


def deterministic(config: dict) -> dict:
    """No dropout and one lookahead: what remains random is which batches a step sees; small batches,
    so that both runs' four stay in the first epoch."""
    config = copy.deepcopy(config)
    config["data"]["batch_duration_s"] = 3.0
    model = config["model"]
    model["encoder"].update(att_context_size=[[28, 3]], dropout=0.0, dropout_pre_encoder=0.0, dropout_emb=0.0,
                            dropout_att=0.0)
    model["decoder"].setdefault("prednet", {})["dropout"] = 0.0
    model["joint"].setdefault("jointnet", {})["dropout"] = 0.0
    return config


def test_two_processes_train_like_one_accumulating_their_batches(manifests, tmp_path):  # noqa: F811
    train, val = manifests
    alone = trainer_from_scratch(parse_train_config(deterministic(
        tiny_train_config(train, None, tmp_path / "alone", max_steps=2, accumulate=2))))
    alone.fit()
    for steps in (1, 2):  # the second call resumes from the first's checkpoint
        cfg = parse_train_config(deterministic(
            tiny_train_config(train, None, tmp_path / "parallel", max_steps=steps, processes=2, threads=1)))
        train_in_processes(cfg, resume=True)
    state = torch.load(tmp_path / "parallel" / "last.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["step"] == 2 and len(state["rng_ranks"]) == 2
    assert state["progress"]["batch_in_epoch"] == alone.progress.batch_in_epoch == 4
    assert state["progress"]["audio_s"] == alone.progress.audio_s
    for key, value in alone.model.state_dict().items():
        torch.testing.assert_close(state["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    moved = [k for k, v in alone.model.state_dict().items() if not torch.equal(v, state["model"][k])]
    assert (tmp_path / "parallel" / "model.nemo").is_file() and len(moved) < len(state["model"])


def test_the_launcher_takes_init_froms_tokenizer(manifests, tmp_path):  # noqa: F811
    """train_in_processes makes the run's tokenizer before spawning: with trainer.init_from it is the
    model's, not one trained on this run's data (which differed, and the processes refused to start)."""
    train, val = manifests
    texts = [f"{t} <en-US>" for t in ("Kalo mine sutari.", "Pode anka lomi.", "Rita sune kapo!")] * 50
    other = tmp_path / "other"
    train_tokenizer(texts, 40, tags_in(texts)).save(other / "tokenizer")  # not what `train` would make
    make_trainer(manifests, other, max_steps=1).export(other / "model.nemo")
    cfg = parse_train_config(tiny_train_config(train, val, tmp_path / "run", init_from=str(other / "model.nemo")))
    assert run_tokenizer(cfg).model == (other / "tokenizer" / "tokenizer.model").read_bytes()
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.model").read_bytes() == run_tokenizer(cfg).model


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_stopping_the_command_stops_every_process(manifests, tmp_path):  # noqa: F811
    train, val = manifests
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(train, None, tmp_path / "run", max_steps=100_000,
                                                       processes=2, threads=1)))
    # Started as a shell starts a background job (`nohup babelcast train … &`): SIGINT ignored.
    command = subprocess.Popen([sys.executable, "-m", "babelcast", "train", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(command.pid)], capture_output=True,
                                               text=True).stdout.split()]
    command.terminate()
    command.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(map(alive, children)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(children) >= 2 and not any(map(alive, children))


def test_the_launcher_refuses_a_checkpoint_of_another_starting_model(manifests, tmp_path):  # noqa: F811
    """Checked before spawning, so `babelcast train` stops in one line, not with a worker's traceback."""
    from babelcast.train.loop import ResumeError

    train, val = manifests
    make_trainer(manifests, tmp_path / "base", max_steps=1).export(tmp_path / "base.nemo")
    cfg = parse_train_config(tiny_train_config(train, val, tmp_path / "run", init_from=str(tmp_path / "base.nemo"),
                                               processes=2, threads=1))
    (tmp_path / "run").mkdir()
    torch.save({"start": "sha256:0123456789abcdef older.nemo"}, tmp_path / "run" / "last.pt")
    with pytest.raises(ResumeError, match=r"another model \(sha256:0123456789abcdef older.nemo, not sha256:\w+ base"):
        train_in_processes(cfg, resume=True)
