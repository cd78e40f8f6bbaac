"""babelcast on a real Ray cluster: a head and a second node started as separate `ray start` processes on
loopback (two logical CPUs each, a small object store, token authentication), the CLI as a user runs it.
Select with `-m ray`; they run by default (CI too)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import soundfile as sf

from server_util import (expected_text, frames, pcm16, read_until_closed, realtime_events, speech, start_server,
                         update)
from tiny import synth_audio
from tiny_nemo import write_tiny_nemo

import babelcast
from babelcast.scale.batch import WorkItem, units_by_duration
from babelcast.scale.serving import APP_NAME, STATS_PERIOD_S, ModelReplicas, deployment_options, model_deployment
from babelcast.server.errors import WS_SERVICE_RESTART
from babelcast.server.fleet import Replicas

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`ray start --block` processes, each in its own process group so teardown ends exactly what it started."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []

    def start_node(self, *options: str) -> None:
        """One node, waited for until its runtime is up."""
        log = self.folder / f"node{len(self.nodes)}.log"
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--object-store-memory",
                  "200000000", "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
        with log.open("w") as out:
            self.nodes.append(subprocess.Popen([RAY, "start", *common, *options], env=self.env, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while STARTED not in log.read_text():
            assert self.nodes[-1].poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGKILL each node's process group (its workers end when their raylet is gone)."""
        for node in self.nodes:
            _signal_group(node.pid, signal.SIGKILL)
            node.wait()

    def actor_pids(self, title: str) -> list[int]:
        """This cluster's worker processes (descendants of its nodes) whose title starts with `title`."""
        parents = {}
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = proc.joinpath("stat").read_text()
                parents[int(proc.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]),
                                           proc.joinpath("cmdline").read_bytes())
            except (OSError, ValueError):
                continue
        ours = {node.pid for node in self.nodes}

        def in_cluster(pid: int) -> bool:
            while pid in parents and pid not in ours:
                pid = parents[pid][0]
            return pid in ours

        return [pid for pid, (_, cmdline) in parents.items()
                if cmdline.startswith(title.encode()) and in_cluster(pid)]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, two logical CPUs each (room for the three or four model replicas of `served`),
    on loopback."""
    folder = Path(tempfile.mkdtemp(prefix="bcray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    c = Cluster(folder)
    try:
        c.start_node("--head", "--port", str(c.port), "--include-dashboard", "false", "--temp-dir", str(folder),
                     "--ray-client-server-port", str(_free_port()))
        c.start_node("--address", c.address)
        yield c
    finally:
        c.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A tiny model and a manifest of 60 short files in two languages, one of them unreadable."""
    folder = tmp_path_factory.mktemp("corpus")
    model = write_tiny_nemo(folder / "tiny.nemo")
    lines = []
    for i in range(60):
        path = folder / f"u{i:02d}.wav"
        if i == 7:
            path.write_text("not audio")
        else:
            sf.write(path, synth_audio(8000 + 1600 * (i % 7), seed=i).numpy(), 16000)
        lines.append(json.dumps({"audio_filepath": path.name, "duration": 0.5 + 0.1 * (i % 7),
                                 "lang": "en-US" if i < 40 else "de-DE", "text": f"utterance {i}"}))
    manifest = folder / "corpus.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    reference = folder / "single.jsonl"
    done = _transcribe(manifest, model, reference, {**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 1 and len(reference.read_text().splitlines()) == 59, done.stderr
    return {"model": model, "manifest": manifest, "reference": reference.read_text()}


def _transcribe(manifest: Path, model: Path, out: Path, env, *options: str) -> subprocess.CompletedProcess:
    """`babelcast transcribe MANIFEST --out OUT` in a subprocess."""
    return subprocess.run(_command(manifest, model, out, *options), env=env, capture_output=True, text=True,
                          timeout=300)


def _command(manifest: Path, model: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "babelcast", "transcribe", str(manifest), "--model", str(model), "--out", str(out),
            "--batch-size", "4", *options]


def _on_ray(cluster: Cluster) -> list[str]:
    """Two actors (one per node), units of about 2 s of audio: ~30 units for the 60 files."""
    return ["--ray", cluster.address, "--actors", "2", "--unit-seconds", "2"]


def test_units_are_cut_by_duration_language_and_latency():
    def item(index: int, seconds: float, language: str = "en-US", latency_ms: int | None = None) -> WorkItem:
        return WorkItem(index, f"{index}.wav", language, latency_ms, 0.0, None, seconds)

    items = [item(0, 4), item(1, 4), item(2, 4), item(3, 30), item(4, 1, "de-DE"), item(5, 1, "de-DE", 80)]
    assert [[i.index for i in unit] for unit in units_by_duration(items, 10)] == [[0, 1], [2], [3], [4], [5]]


def test_batch_on_two_nodes_equals_single_process(cluster, corpus, tmp_path):
    out = tmp_path / "ray.jsonl"
    done = _transcribe(corpus["manifest"], corpus["model"], out, cluster.env, *_on_ray(cluster))
    assert done.returncode == 1, done.stderr  # the unreadable file, reported as one error line
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "u07.wav" in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert out.read_text() == corpus["reference"]


def test_a_killed_actor_is_replaced_and_the_results_are_the_same(cluster, corpus, tmp_path):
    out = tmp_path / "ray.jsonl"
    run = subprocess.Popen(_command(corpus["manifest"], corpus["model"], out, *_on_ray(cluster)), env=cluster.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (actors := cluster.actor_pids("ray::MapWorker")):  # the job's actors exist only while it runs
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before its actors were seen"
        time.sleep(0.02)
    os.kill(actors[0], signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1 and "Traceback" not in err, err
    assert out.read_text() == corpus["reference"]


def test_an_interrupted_run_continues_where_it_stopped(cluster, corpus, tmp_path):
    out = tmp_path / "ray.jsonl"
    one_by_one = ["--ray", cluster.address, "--actors", "1", "--unit-seconds", "0.1"]  # 60 units: a slow run
    run = subprocess.Popen(_command(corpus["manifest"], corpus["model"], out, *one_by_one), env=cluster.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lines(out, 1, run)
    run.kill()
    run.wait()
    finished = out.read_text().splitlines()
    assert 0 < len(finished) < 59, "the run was not interrupted mid-way"
    kept = [json.loads(line) for line in finished]
    kept[0]["text"] = "written by the first run"  # kept, not redone, by the rerun
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept) + '{"source": "cut sh')
    done = _transcribe(corpus["manifest"], corpus["model"], out, cluster.env, *_on_ray(cluster))
    assert done.returncode == 1, done.stderr
    lines = out.read_text().splitlines()
    expected = corpus["reference"].splitlines()
    assert json.loads(lines[0])["text"] == "written by the first run"
    assert lines[1:] == expected[1:]


def test_eval_on_ray_equals_single_process(cluster, corpus, tmp_path):
    results = {}
    for name, options in (("single", []), ("ray", ["--ray", cluster.address, "--actors", "2"])):
        done = subprocess.run([sys.executable, "-m", "babelcast", "eval", str(corpus["manifest"]), "--model",
                               str(corpus["model"]), "--mode", "offline", "--latency", "1120", "--out-dir",
                               str(tmp_path / name), *options], env=cluster.env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr  # u07.wav is not audio
        records = [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
        results[name] = sorted(records, key=lambda r: r["key"])
        for r in results[name]:
            del r["compute_s"]
    assert len(results["single"]) == 59 * 2  # utterances x language modes
    assert results["ray"] == results["single"]


def _wait_for_lines(path: Path, n: int, run: subprocess.Popen) -> None:
    """Until `path` has n finished lines (the run must still be going)."""
    deadline = time.monotonic() + 120
    while not (path.is_file() and path.read_text().count("\n") >= n):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before writing a line"
        time.sleep(0.02)


# ---------------------------------------------------------------- serving: babelcast serve --ray


TINY_REPLICAS = f"ray::ServeReplica:{APP_NAME}:model-tiny"  # the process title of model "tiny"'s replicas


@pytest.fixture(scope="module")
def other_model(corpus) -> Path:
    """A second tiny model (other weights: other text), served as "other"."""
    return write_tiny_nemo(corpus["model"].with_name("other.nemo"), seed=1)


@pytest.fixture(scope="module")
def served(cluster, corpus, other_model):
    """`babelcast serve --ray ADDRESS --replicas 2` of two models: "tiny" (the default, 2 replicas at fp32) and
    "other" (bf16, autoscaled between 1 and 2 replicas), until SIGINT."""
    port = _free_port()
    log = cluster.folder / "serve.log"
    models = ["--model", f"tiny={corpus['model']}", "--model", f"other={other_model},precision=bf16,replicas=1-2"]
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "babelcast", "serve", "--ray", cluster.address, "--replicas",
                                   "2", "--port", str(port), *models, *SERVER_OPTIONS],
                                  env=cluster.env, stdout=out, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{port}"
    try:
        _wait_for_health(url, server, log)
        deadline = time.monotonic() + 120
        while len(cluster.actor_pids(TINY_REPLICAS)) < 2:
            assert time.monotonic() < deadline, cluster.actor_pids("ray::")
            time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # removes the deployment
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


SERVER_OPTIONS = ["--precision", "fp32", "--threads", "1", "--max-lag-ms", "1e9", "--max-sessions", "4",
                  "--no-phase-align", "--endpoint-ms", "0"]


def _wait_for_health(url: str, server: subprocess.Popen, log: Path) -> None:
    """Until both replicas answer /health through the proxy (each took a request)."""
    import httpx

    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def _post_wav(url: str, audio, model: str = "tiny") -> dict:
    """POST /v1/audio/transcriptions with a WAV of `audio`."""
    import io

    import httpx

    wav = io.BytesIO()
    sf.write(wav, audio, 16000, format="WAV", subtype="PCM_16")
    answer = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav.getvalue(), "audio/wav")},
                        data={"model": model, "response_format": "json"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _session(url: str, audio, opened: asyncio.Event | None = None, hold_s: float = 0.0,
                   model: str = "tiny") -> tuple[list, int]:
    """One /v1/listen session: the audio in 40 ms frames, paced over `hold_s` seconds, then close; its events
    and the WebSocket's close code (the server's events up to its close when it ends the session first)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(f"ws://{url}/v1/listen?encoding=pcm_s16le&sample_rate=16000&model={model}") as ws:
        events = asyncio.create_task(read_until_closed(ws, timeout_s=60))
        pieces = frames(audio)
        with contextlib.suppress(ConnectionClosed):
            for n, piece in enumerate(pieces):
                await ws.send(piece)
                if n == 0 and opened is not None:
                    opened.set()
                await asyncio.sleep(hold_s / len(pieces))
            await ws.send(json.dumps({"type": "close"}))
        return await events


def test_http_and_websocket_through_two_replicas_answer_as_one_server(served, corpus, tmp_path_factory):
    rec = babelcast.load_model(corpus["model"])
    audio = speech(2.0, seed=3)
    one = start_server(rec, endpoint_ms=0, max_sessions=4)
    try:
        assert _post_wav(f"http://{served}", audio)["text"] == _post_wav(one.http_url, audio)["text"]
    finally:
        one.__exit__()

    async def two_at_once():
        return await asyncio.gather(_session(served, audio), _session(served, speech(1.5, seed=4)))

    (first, code1), (second, code2) = asyncio.run(two_at_once())
    assert _finals(first) == [_expected(rec, audio, first)], first
    assert _finals(second) == [_expected(rec, speech(1.5, seed=4), second)], second
    assert code1 == code2 == 1000


def test_each_request_reaches_the_model_it_names(served, other_model):
    """"other" answers as a single bf16 server of its file does, by upload, /v1/listen and a Realtime session
    moved to it by its first update; "tiny" answers otherwise; an unknown name is a 404 naming both."""
    import httpx

    audio = speech(2.0, seed=3)
    one = start_server(babelcast.load_model(other_model), model_name="other", precision="bf16", endpoint_ms=0,
                       max_sessions=4)
    try:
        want = _post_wav(one.http_url, audio, model="other")["text"], _realtime_transcript(one.http_url, audio)
    finally:
        one.__exit__()
    url = f"http://{served}"
    assert (_post_wav(url, audio, model="other")["text"], _realtime_transcript(url, audio)) == want
    assert _post_wav(url, audio)["text"] != want[0]  # the default, "tiny"
    assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["tiny", "other"]
    info = httpx.get(f"{url}/v1/info", params={"model": "other"}).json()
    assert info["model"] == "other" and info["precision"] == "bf16"
    events, code = asyncio.run(_session(served, speech(1.0, seed=4), model="other"))
    assert events[0]["model"] == "other" and code == 1000
    unknown = httpx.get(f"{url}/v1/info", params={"model": "nope"})
    assert unknown.status_code == 404 and "tiny, other" in unknown.json()["error"]["message"]


def _realtime_transcript(url: str, audio) -> str:
    """The transcript of `audio` in a Realtime session whose first update names the model "other"."""
    import base64

    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
        assert update(conn, model="other", language="en-US", latency_ms=80).type == "session.updated"
        data = pcm16(audio)
        for i in range(0, len(data), 3200):
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 3200]).decode())
        conn.input_audio_buffer.commit()
        return realtime_events(conn, "conversation.item.input_audio_transcription.completed")[-1].transcript


def test_replica_counts_and_ranges_become_serve_options():
    """A count is num_replicas; a range is Serve autoscaling from MIN to MAX replicas at 0.7 x --max-sessions
    ongoing requests per replica (what serve.run gets; no cluster needed)."""
    def build_app():
        raise AssertionError("not built here")

    fixed = model_deployment(ModelReplicas("a", build_app, Replicas(2, 2), max_sessions=32, max_pending=4),
                             room=dict, drain_timeout_s=15.0)
    assert fixed.name == "model-a" and fixed.num_replicas == 2 and fixed.max_ongoing_requests == 2 * 32 + 4 + 8
    assert fixed._deployment_config.autoscaling_config is None
    gpus = ModelReplicas("b", build_app, Replicas(1, 8), max_sessions=32, max_pending=4, num_cpus=4, num_gpus=1)
    ranged = model_deployment(gpus, room=dict, drain_timeout_s=15.0)
    scaling = ranged._deployment_config.autoscaling_config  # as serve.run sends it to the controller
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (1, 1, 8)
    assert scaling.target_ongoing_requests == pytest.approx(0.7 * 32)
    assert ranged.ray_actor_options["num_gpus"] == 1 and ranged.ray_actor_options["num_cpus"] == 4
    assert ranged._deployment_config.graceful_shutdown_timeout_s == 15.0
    assert deployment_options(gpus, 15.0)["autoscaling_config"]["max_replicas"] == 8


def test_the_router_ranks_by_room_and_keeps_a_session_on_its_replica():
    """New requests: admitting replicas, most room first, refusing ones last. A session's push: its replica
    alone; once that one is gone, any (it answers that the session is not there, and the session ends)."""
    from types import SimpleNamespace

    from babelcast.scale.router import PIN, RoomRouter

    def replica(name: str, admits: bool, free: int):
        return SimpleNamespace(replica_id=SimpleNamespace(unique_id=name), routing_stats={"admits": admits,
                                                                                          "free": free})

    def request(**kwargs):
        return SimpleNamespace(kwargs=kwargs, routing_context=SimpleNamespace(should_backoff=False))

    full, roomy, some = replica("full", False, 0), replica("roomy", True, 3), replica("some", True, 1)
    router = object.__new__(RoomRouter)  # choose_replicas reads nothing of the router's own state

    def ranks(candidates, pending):
        return [[r.replica_id.unique_id for r in rank] for rank in asyncio.run(router.choose_replicas(candidates,
                                                                                                      pending))]

    assert ranks([full, some, roomy], request()) == [["roomy"], ["some"], ["full"]]
    assert ranks([full, some, roomy], request(**{PIN: "full"})) == [["full"]]
    assert ranks([some, roomy], request(**{PIN: "gone"})) == [["roomy"], ["some"]]


def test_metrics_through_the_proxy_cover_every_replica(served):
    import httpx

    def finals(text: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("babelcast_finals_total"))

    def fleet() -> str:
        time.sleep(2 * STATS_PERIOD_S + 0.5)  # each replica posts its metrics once per period
        return httpx.get(f"http://{served}/metrics", timeout=10).text

    before = finals(fleet())
    asyncio.run(_session(served, speech(1.0, seed=9)))
    text = fleet()
    ready = [line for line in text.splitlines() if line.startswith("babelcast_ready{")]
    assert len(ready) == 3 and len({line.split('replica="')[1] for line in ready}) == 3, text
    assert sorted(line.split('model="')[1].split('"')[0] for line in ready) == ["other", "tiny", "tiny"]
    assert finals(text) == before + 1  # whichever replica had the session


def test_a_killed_replica_ends_its_sessions_cleanly_and_new_ones_go_to_the_other(served, cluster, corpus):
    rec = babelcast.load_model(corpus["model"])
    audio = speech(3.0, seed=5)
    replicas = cluster.actor_pids(TINY_REPLICAS)
    assert len(replicas) == 2, replicas

    async def kill_one_mid_session():
        a_open, b_open = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(_session(served, audio, a_open, hold_s=8))
        await a_open.wait()
        await asyncio.sleep(2 * STATS_PERIOD_S + 0.5)  # the router hears that replica has one session less room
        b = asyncio.create_task(_session(served, audio, b_open, hold_s=8))
        await b_open.wait()
        await asyncio.sleep(1)
        os.kill(replicas[0], signal.SIGKILL)
        return await asyncio.gather(a, b, return_exceptions=True)

    outcomes = asyncio.run(kill_one_mid_session())
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    finished = [o for o in outcomes if o[1] == 1000]
    cut = [o for o in outcomes if o[1] == WS_SERVICE_RESTART]  # the ingress ends it: error, closed, 1012
    assert len(finished) == 1 and len(cut) == 1, outcomes
    assert _finals(finished[0][0]) == [_expected(rec, audio, finished[0][0])]
    error, closed = cut[0][0][-2:]
    assert error["type"] == "error" and error["code"] == "replica_lost" and "reconnect" in error["message"], cut
    assert closed["type"] == "closed" and closed["reason"] == "error" and closed["audio_s"] > 0, cut
    for n in range(3):  # new sessions: on the live replica (or the one Serve starts in place of the dead)
        events, code = asyncio.run(_session(served, speech(1.0, seed=n)))
        assert code == 1000 and _finals(events) == [_expected(rec, speech(1.0, seed=n), events)], events


def _finals(events: list[dict]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "final"]


def _expected(rec, audio, events: list[dict]) -> str:
    """The final a session with endpointing off must give, at the latency its `ready` event announced."""
    return expected_text(rec, audio, latency_ms=events[0]["settings"]["latency_ms"])
