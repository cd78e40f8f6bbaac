"""The phoneme training aid: espeak-ng's phoneme times match the audio synth makes, frame targets
are the right shares of each frame, and a run with the phone head learns, resumes bit-exactly and
exports the plain model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from babelcast.checkpoint.nemo_archive import read_nemo
from babelcast.data import synth
from babelcast.data.phones import phone_timeline
from babelcast.train.data import BatchDataset
from babelcast.train.phones import PAUSE, PhoneGrid, frame_targets, inventory, phone_nll

from train_fixtures import make_trainer, one_thread, write_manifest  # noqa: F401 (autouse fixture)


def speech_span_ms(audio: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms of the file whose level is above 2 % of its loudest."""
    env = np.sqrt(np.convolve(audio.astype(np.float64) ** 2, np.ones(160) / 160, "same"))
    loud = np.flatnonzero(env > 0.02 * env.max())
    return loud[0] / 16, loud[-1] / 16


@pytest.mark.parametrize("locale", ["en-US", "de-DE"])
def test_espeak_phoneme_times_match_the_synthesized_file(tmp_path, locale):
    report = synth.synthesize(synth.plan([locale], 2, "train", seed=3), tmp_path, processes=1)
    for record in report.records:
        audio, rate = sf.read(tmp_path / record["audio_filepath"], dtype="float32")
        onset_ms, offset_ms = speech_span_ms(audio)
        phones = record["phones"]
        assert phones[-1][1] == PAUSE and all(a[0] <= b[0] for a, b in zip(phones, phones[1:]))
        named = [i for i, (_, name) in enumerate(phones) if name]
        first, last_end = phones[named[0]][0], phones[named[-1] + 1][0]  # speech from first phoneme to last's end
        # The start is exact; a closing plosive or fricative can be quieter than the 2 % level.
        assert abs(first - onset_ms) < 15 and -15 < last_end - offset_ms < 80, (first, onset_ms, last_end, offset_ms)
        assert len({name for _, name in phones}) > 5


def test_phone_timeline_names_a_missing_voice():
    with pytest.raises(RuntimeError, match="no voice"):
        phone_timeline("hello", "xx-nonexistent", 165, 50)


def test_frame_targets_are_each_frames_shares():
    grid = PhoneGrid((PAUSE, "a", "b"), 80.0)
    timeline = ((100, "a"), (260, "b"), (300, PAUSE))  # a: 100-260 ms, b: 260-300 ms
    targets = frame_targets(timeline, 6, grid)  # frame t: window (80t - 80, 80t]
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[:, 1], [0, 0, 60 / 80, 1, 20 / 80, 0], atol=1e-6)
    np.testing.assert_allclose(targets[:, 2], [0, 0, 0, 0, 40 / 80, 0], atol=1e-6)
    slow = frame_targets(timeline, 9, grid, time_scale=2.0)  # a: 200-520 ms
    np.testing.assert_allclose(slow[:, 1], [0, 0, 0, 40 / 80, 1, 1, 1, 40 / 80, 0], atol=1e-6)
    assert inventory([timeline, ((0, "c"), (5, PAUSE))]) == (PAUSE, "a", "b", "c")


def test_phone_nll_ignores_padded_frames():
    logits = torch.randn(2, 5, 3)
    targets = torch.softmax(torch.randn(2, 4, 3), dim=-1)
    loss, frames = phone_nll(logits, targets, torch.tensor([4, 2]))
    log_p = torch.log_softmax(logits, -1)
    expected = (-(targets[0] * log_p[0, :4]).sum() - (targets[1, :2] * log_p[1, :2]).sum()) / 2
    assert int(frames) == 6 and torch.allclose(loss, expected)


def tone_manifest(folder, n: int, seed: int):
    """Silence, a tone of one of three pitches (its 'phoneme'), silence; the timeline says where."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        lead_ms, tone_ms, tail_ms = 200, int(rng.integers(600, 1200)), 200
        t = np.arange(tone_ms * 16) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (200, 500, 1200)[i % 3] * t)
        audio = np.concatenate([np.zeros(lead_ms * 16), tone, np.zeros(tail_ms * 16)]) + 1e-3 * rng.standard_normal(
            (lead_ms + tone_ms + tail_ms) * 16)
        sf.write(folder / f"t{i}.wav", audio.astype(np.float32), 16000)
        end = lead_ms + tone_ms + tail_ms
        rows.append({"audio_filepath": f"t{i}.wav", "duration": end / 1000, "text": ("Ka lo.", "Mi ne?", "Su ta!")[i % 3],
                     "target_lang": ("en-US", "de-DE")[i % 2],
                     "phones": [[0, PAUSE], [lead_ms, f"p{i % 3}"], [lead_ms + tone_ms, PAUSE], [end, PAUSE]]})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def phone_manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("phone_data")
    return tone_manifest(root / "train", 12, seed=1), write_manifest(root / "val", 3, seed=2)


def make(manifests, out_dir, **trainer):
    return make_trainer(manifests, out_dir, phone_weight=2.0, **trainer)


def test_the_phone_head_learns_and_is_never_exported(phone_manifests, tmp_path):
    trainer = make(phone_manifests, tmp_path / "run", max_steps=60)
    assert trainer.phone_grid.phones == (PAUSE, "p0", "p1", "p2") and trainer.phone_grid.frame_ms == 80
    trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    phone = [r["phone_per_frame"] for r in log if "phone_per_frame" in r]
    assert len(phone) == 60 and sum(phone[-10:]) < 0.8 * sum(phone[:10])
    exported = read_nemo(tmp_path / "run" / "model.nemo").state_dict
    assert set(exported) == set(trainer.model.state_dict())


def test_resume_with_the_phone_head_is_bit_exact(phone_manifests, tmp_path):
    straight = make(phone_manifests, tmp_path / "a", max_steps=4)
    straight.fit()
    first = make(phone_manifests, tmp_path / "b", max_steps=2)
    first.fit()
    second = make(phone_manifests, tmp_path / "b", max_steps=4)
    assert second.resume()
    second.fit()
    for key, value in straight.trained.state_dict().items():
        assert torch.equal(value, second.trained.state_dict()[key]), key


def test_phone_weight_needs_timelines(phone_manifests, tmp_path):
    _, val = phone_manifests
    with pytest.raises(ValueError, match="'phones' timelines"):
        make((val, val), tmp_path / "run", max_steps=1)


def test_utterances_without_a_timeline_train_without_the_phoneme_loss(phone_manifests, tmp_path):
    train, val = phone_manifests  # val's lines have no timeline, as Festival's (data synth --festival)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({**json.loads(line), "audio_filepath": str(folder / json.loads(line)[
        "audio_filepath"])}) + "\n" for folder, path in ((train.parent, train), (val.parent, val))
        for line in path.read_text().splitlines()))
    trainer = make((mixed, val), tmp_path / "run", max_steps=2)
    assert trainer.phone_grid.phones == (PAUSE, "p0", "p1", "p2")  # from the lines that have timelines
    data = BatchDataset(trainer.train_utts, [list(range(len(trainer.train_utts)))], None, None, 0.0, (0,),
                        trainer.phone_grid)
    targets = [data._phone_targets(u, np.zeros(16000, np.float32), 1.0) for u in trainer.train_utts]
    with_timeline = [u.entry.phones is not None for u in trainer.train_utts]
    assert sum(with_timeline) == 12 and len(targets) == 15
    assert all((t.sum(axis=1) > 0.99).all() if timed else not t.any() for t, timed in zip(targets, with_timeline))
    trainer.fit()
    assert trainer.progress.step == 2
