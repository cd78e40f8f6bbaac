"""End to end on a tiny .nemo written by babelcast: offline == streaming, batching, options."""
import numpy as np
import pytest

import babelcast
from babelcast.checkpoint.nemo_archive import CheckpointError

from tiny import synth_audio
from tiny_nemo import write_tiny_nemo


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("m") / "tiny.nemo"))


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    """The tiny model with a CTC head beside the transducer (the same transducer weights)."""
    return babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("m") / "hybrid.nemo", hybrid=True))


def clips():
    return [synth_audio(n, seed=i).numpy() for i, n in enumerate([5000, 16000, 28123, 41000])]


def test_emits_tokens(rec):
    out = rec.transcribe(clips(), language="auto")
    assert all(len(t.tokens) >= 5 for t in out), [len(t.tokens) for t in out]
    assert len({tok for t in out for tok in t.tokens}) >= 4


@pytest.mark.parametrize("latency", [80, 160, 320, 560, 1120])
@pytest.mark.parametrize("language", ["auto", "de-DE"])
@pytest.mark.parametrize("decoder", ["rnnt", "ctc"])
def test_streaming_tokens_equal_offline(hybrid, latency, language, decoder):
    """Either head of a hybrid: cache-aware streaming gives offline's tokens at the same latency (CTC:
    label runs that cross a step merge as offline, through the last frame's label each stream carries)."""
    audio = clips()
    offline = hybrid.transcribe(audio, language=language, latency_ms=latency, decoder=decoder, keep_lang_tags=True)
    streamed = hybrid.transcribe(audio, language=language, latency_ms=latency, mode="streaming", decoder=decoder,
                                 keep_lang_tags=True)
    for a, b in zip(offline, streamed):
        assert a.tokens == b.tokens
        assert a.token_frames == b.token_frames
        assert b.mode == "streaming" and b.latency_ms == latency


def test_streaming_ctc_follows_the_language_prompt(hybrid):
    """The prompt acts on the encoder frames before either head (NeMo's conformer_stream_step applies it
    before choosing the decoder; its hybrid prompt model's forward feeds both heads prompted frames)."""
    audio = clips()
    de, auto = (hybrid.transcribe(audio, language=lang, latency_ms=320, mode="streaming", decoder="ctc")
                for lang in ("de-DE", "auto"))
    assert sum(a.tokens != b.tokens for a, b in zip(de, auto)) >= 3


def test_ctc_session_pieces_of_any_size_equal_offline(hybrid):
    """A live CTC session fed uneven pieces (steps of one chunk or several) ends with offline's tokens."""
    audio = clips()[3]
    offline = hybrid.transcribe([audio], language="de-DE", latency_ms=80, decoder="ctc")[0]
    session = hybrid.stream("de-DE", latency_ms=80, decoder="ctc")
    rng = np.random.default_rng(1)
    pos = 0
    while pos < len(audio):
        n = int(rng.integers(160, 4000))
        session.accept_audio(audio[pos:pos + n])
        pos += n
    final = session.flush()
    assert final.tokens == offline.tokens and final.tokens
    assert final.tokens != hybrid.transcribe([audio], language="de-DE", latency_ms=80)[0].tokens  # not the joint


def test_pieces_of_any_size(rec):
    audio = clips()[2]
    whole = rec.transcribe([audio], language="es", latency_ms=320, mode="streaming")[0]
    rng = np.random.default_rng(0)
    session = rec.stream("es", 320)
    pos, partials = 0, []
    while pos < len(audio):
        n = int(rng.integers(160, 9000))
        partials.append(session.accept_audio(audio[pos:pos + n]).text)
        pos += n
    final = session.flush()
    assert final.tokens == whole.tokens
    assert final.latency_ms == 320 and final.mode == "streaming"


def test_batch_does_not_change_tokens(rec):
    audio = clips()
    together = rec.transcribe(audio, language="auto", batch_size=4)
    alone = [rec.transcribe([a], language="auto", batch_size=1)[0] for a in audio]
    assert [t.tokens for t in together] == [t.tokens for t in alone]


def test_language_changes_output(rec):
    audio = clips()
    en = rec.transcribe(audio, language="en-US")
    de = rec.transcribe(audio, language="de-DE")
    assert [t.tokens for t in en] != [t.tokens for t in de]
    assert en[0].language == "en-US"


def test_language_note_checks_before_decoding(rec):
    """language_note: an unknown name refused with what is accepted; a warning only for an untrained locale."""
    from dataclasses import replace

    from babelcast.config import with_trained_locales
    from babelcast.errors import UnsupportedLanguage

    with pytest.raises(UnsupportedLanguage, match="unknown language 'xx-XX'; use auto, or .*de-DE"):
        rec.language_note("xx-XX")
    assert rec.language_note("auto") is None and rec.language_note("es") is None  # nothing said: no warning
    trained = babelcast.Recognizer(rec.model, rec.tokenizer)
    trained.cfg = replace(rec.cfg, prompt=with_trained_locales(rec.cfg.prompt, ["en-US", "de-DE"]))
    assert trained.language_note("de") is None
    assert trained.language_note("es").startswith("this model was not trained on es-US (trained: de-DE, en-US)")


def test_bad_options(rec):
    with pytest.raises(ValueError, match="unknown language 'xx-XX'; use auto, or .*de-DE"):
        rec.transcribe(clips(), language="xx-XX")
    with pytest.raises(ValueError, match="latency 100 ms"):
        rec.transcribe(clips(), latency_ms=100)
    for mode in ("offline", "streaming"):
        with pytest.raises(ValueError, match="no CTC head .not a hybrid"):
            rec.transcribe(clips(), decoder="ctc", mode=mode)
    with pytest.raises(ValueError, match="no CTC head"):
        rec.stream(decoder="ctc")
    with pytest.raises(ValueError, match="unknown decoder 'tdt'"):
        rec.stream_options(decoder="tdt")


def test_progress_reports_blocks_of_one_long_file(rec):
    """A 65-s file is encoded in blocks: progress rises block by block to its length, tokens unchanged."""
    audio = synth_audio(65 * 16000, seed=5).numpy()
    seen: list[float] = []
    with_progress = rec.transcribe([audio], language="de-DE", progress=seen.append)[0]
    assert len(seen) >= 3 and all(a < b for a, b in zip(seen, seen[1:])), seen
    assert seen[-1] == pytest.approx(65.0) and seen[0] < 30
    assert with_progress.tokens == rec.transcribe([audio], language="de-DE")[0].tokens


@pytest.mark.parametrize("mode", ["offline", "streaming"])
def test_progress_counts_audio_seconds_per_batch(rec, mode):
    audio = clips()
    seen: list[float] = []
    rec.transcribe(audio, mode=mode, batch_size=2, progress=seen.append)
    lengths = sorted(map(len, audio)) if mode == "offline" else [len(a) for a in audio]  # offline sorts by length
    assert seen == pytest.approx([sum(lengths[:2]) / 16000, sum(lengths) / 16000])


def test_160ms_is_reported_untrained(rec):
    t = rec.transcribe(clips()[:1], latency_ms=160)[0]
    assert t.latency_ms == 160 and not t.trained_latency
    assert rec.transcribe(clips()[:1], latency_ms=320)[0].trained_latency


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        babelcast.load_model(tmp_path / "nope.nemo")
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(b"not a tar")
    with pytest.raises(CheckpointError, match="not a .nemo archive"):
        babelcast.load_model(bad)
