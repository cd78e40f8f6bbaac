"""The bundled demo model (scripts/train_demo.sh): it ships small, is the default of the commands,
transcribes the bundled held-out samples, and NeMo 3.0.0 restores it to the same tokens."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import babelcast
from babelcast.audio.io import load_audio
from babelcast.cli import main
from babelcast.data.nonspeech import make_clip, plan_nonspeech
from babelcast.eval.metrics import error_rate
from babelcast.streaming.engine import EngineConfig

from test_train_export import babelcast_tokens, nemo_asr, nemo_tokens  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [json.loads(line) for line in (ROOT / "samples" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
# Bounds just above the measurement (mean sample WER 0.138 at 80 ms, 0.123 at 1120 ms for v14; v13's 0.154 and 0.100,
# v12's 0.218 and 0.142, v11's 0.225 and 0.126, v10's 0.21 and 0.14, v9's 0.19 and 0.12, v8's 0.31 and 0.28, v5's 0.34
# and 0.25, v4's 0.27 and 0.33, v3's 0.37 and 0.33: six utterances, so a model better on the 1,800-utterance test sets
# can still lose here at one latency, as v8 did at 1120 ms on the English sample alone (0.89 against v5's 0.44);
# language given: the Average row of `babelcast eval samples/manifest.jsonl --latency 80,1120 --lang-mode given --mode
# offline`, one sample per language; auto-detect right on 6 of 6), so a regressed model fails (stage 1's model scored
# 0.70 and 0.57); the samples are test-split sentences and voices, never trained on. An untrained model scores 1.0.
MAX_SAMPLE_WER = {80: 0.15, 1120: 0.13}
MIN_LID_CORRECT = 5
# Of the 70 test clips without speech (`babelcast data nonspeech --n 70 --split test --seed 0`, the
# README's non-speech table), those given a non-empty transcript, with the clip's language given and in
# auto mode; bounds just above the measurement (v14 to v8: none at either latency, v5: at 80 ms 1 given and 1
# auto, at 1120 ms none: `scripts/train_demo.sh eval3`, runs/eval3/demo14/nonspeech-test/summary.md). v4 wrote
# something for 0-1, v3 for 0-2, v2 for 59-62.
MAX_NONSPEECH_SPOKEN = {80: 1, 1120: 1}


@pytest.fixture(scope="module")
def demo():
    return babelcast.load_model(babelcast.DEFAULT_MODEL)


def sample_audio():
    return [load_audio(ROOT / "samples" / s["audio_filepath"]) for s in SAMPLES]


def test_the_demo_model_ships_small_and_is_the_default():
    path = Path(babelcast.DEFAULT_MODEL)
    assert path.is_file() and path.stat().st_size <= 50_000_000  # issue 19's bound; v14 is 37.3 MB
    assert babelcast.default_model() == str(path)


def test_it_transcribes_the_held_out_samples(demo):
    audio = sample_audio()
    for latency_ms, bound in MAX_SAMPLE_WER.items():
        given = [demo.transcribe([a], language=s["lang"], latency_ms=latency_ms)[0] for s, a in zip(SAMPLES, audio)]
        per_sample = [error_rate([(s["text"], t.text)], s["lang"]) for s, t in zip(SAMPLES, given)]
        assert sum(per_sample) / len(per_sample) <= bound, (latency_ms, per_sample)
    auto = demo.transcribe(audio, language="auto", latency_ms=1120)
    assert sum(t.language == s["lang"] for s, t in zip(SAMPLES, auto)) >= MIN_LID_CORRECT


def test_it_says_nothing_without_speech(demo):
    jobs = plan_nonspeech(list(demo.model.cfg.prompt.trained_locales), 70, "test", seed=0)
    clips = [make_clip(job) for job in jobs]
    for latency_ms, bound in MAX_NONSPEECH_SPOKEN.items():
        spoken = {}
        for lang in ("auto", *sorted({job.locale for job in jobs})):
            chosen = [i for i, job in enumerate(jobs) if lang in ("auto", job.locale)]
            texts = demo.transcribe([clips[i] for i in chosen], language=lang, latency_ms=latency_ms)
            spoken[lang != "auto"] = spoken.get(lang != "auto", 0) + sum(bool(t.text.strip()) for t in texts)
        assert spoken[True] <= bound and spoken[False] <= bound, (latency_ms, spoken)


def test_the_first_readme_command_needs_no_model(capsys):
    sample = next(s for s in SAMPLES if s["lang"] == "de-DE")  # sample WER 0.0 at the default latency
    assert main(["transcribe", str(ROOT / "samples" / sample["audio_filepath"]), "--lang", sample["lang"]]) in (0, None)
    text = capsys.readouterr().out
    assert error_rate([(sample["text"], text)], sample["lang"]) <= 0.25


def test_nemo_restores_the_demo_model_to_the_same_tokens(demo, nemo_asr):
    nemo_model = nemo_asr.restore_from(babelcast.DEFAULT_MODEL, map_location="cpu").eval()
    assert type(nemo_model).__name__ == "EncDecRNNTBPEModelWithPrompt"
    audio = sample_audio()
    lengths = torch.tensor([len(a) for a in audio])
    batch = torch.zeros(len(audio), int(lengths.max()))
    for i, a in enumerate(audio):
        batch[i, : len(a)] = torch.from_numpy(a)
    prompts = torch.tensor([demo.model.cfg.prompt.dictionary[s["lang"]] for s in SAMPLES])
    for context in [(56, 0), (56, 13)]:
        ours = babelcast_tokens(demo.model, batch, lengths, prompts, context)[0]
        assert ours == nemo_tokens(nemo_model, batch, lengths, prompts, context)[0]
        assert all(len(t) >= 5 for t in ours)


def test_the_demo_model_says_which_locales_it_was_trained_on(demo):
    prompt = demo.model.cfg.prompt
    assert prompt.trained_locales == ("cs-CZ", "de-DE", "en-US", "es-US", "it-IT", "pl-PL")
    assert prompt.locales[:6] == prompt.trained_locales and "enGB" not in prompt.locales  # trained first, no aliases
    assert prompt.aliases["enGB"] == "en-GB" and prompt.aliases["ja-JA"] == "ja-JP" and prompt.aliases["de"] == "de-DE"
    assert prompt.untrained("fr") == "fr-FR" and prompt.untrained("DE-de") is None


def test_switching_to_italian_mid_stream_gives_the_italian_words(demo):
    """German then Italian in one live stream, no final between them: switching the prompt to it-IT at
    the boundary (`Session.set_language`) gives more of the Italian sentence's words than staying in
    de-DE does (measured at 320 ms on v11: 8 of its 12 distinct words against 7, "sveglia" against "sweglia";
    the same at 80, 160 and 560 ms, while at 1120 ms v11 finds 9 either way; v10 at 1120 ms: 9 against 8, v9 at
    160 ms: 7 against 5, v8 at 1120 ms: 8 against 7, v5 at 320 ms: 7 against 5)."""
    de, it = (load_audio(ROOT / "samples" / f"{lang}.wav") for lang in ("de-DE", "it-IT"))
    reference = set(next(s["text"] for s in SAMPLES if s["lang"] == "it-IT").lower().rstrip(".").split())

    def italian_words(switch: bool) -> int:
        s = demo.stream("de-DE", 320)
        s.accept_audio(de)
        if switch:
            s.set_language("it-IT")
        s.accept_audio(it)
        words = s.flush().text.lower().replace('"', "").replace("!", "").rstrip(".").split()
        return len(reference & set(words))

    assert italian_words(switch=True) > italian_words(switch=False)


def test_auto_mode_reports_each_language_and_a_lock_keeps_the_first(demo):
    """German, a final, then Italian, in auto mode at 1120 ms in one engine: the free stream's finals
    detect de-DE then it-IT, each change announced by a `language` event just before its final; the
    stream with lock_language gets one event, de-DE locked, and its Italian is decoded with the German
    prompt: the tokens, frames and confidence of a stream opened in de-DE on that audio (at 1120 ms the
    demo model's Italian text survives the German prompt; its frames and confidence do not)."""
    de, it = (load_audio(ROOT / "samples" / f"{lang}.wav") for lang in ("de-DE", "it-IT"))
    engine = demo.engine(EngineConfig(max_sessions=2, precision="fp32", endpoint_ms=0, phase_align=False))
    free, locked = (engine.open(demo.stream_options("auto", 1120, lock_language=lock)) for lock in (False, True))
    for audio in (de, it):
        for sid in (free, locked):
            engine.feed(sid, audio)
            engine.finish(sid)
    events = engine.drain()

    def of(sid):
        return [(e.kind, e.segment, e.language if e.kind == "language" else e.transcript.language, e.locked)
                for e in events if e.session_id == sid and e.kind in ("language", "final")]

    assert of(free) == [("language", 0, "de-DE", False), ("final", 0, "de-DE", False),
                        ("language", 1, "it-IT", False), ("final", 1, "it-IT", False)]
    assert of(locked) == [("language", 0, "de-DE", True), ("final", 0, "de-DE", False),
                          ("final", 1, "de-DE", False)]
    finals = [e.transcript for e in events if e.session_id == locked and e.kind == "final"]
    german = demo.transcribe([it], language="de-DE", latency_ms=1120, mode="streaming")[0]
    italian = [e.transcript for e in events if e.session_id == free and e.kind == "final"][1]
    def decode(t):
        return t.tokens, t.token_frames, t.confidence

    assert decode(finals[1]) == decode(german) != decode(italian)
