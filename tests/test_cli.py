"""`babelcast transcribe` driven with a fake recognizer: inputs, outputs, errors and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile as sf

import babelcast
from babelcast import cli
from babelcast.decoding.result import Transcript, Word
from babelcast.errors import UnsupportedLanguage
from babelcast.recognizer import Recognizer

SR = 16000


class FakeRecognizer:
    """Deterministic stand-in for babelcast.recognizer.Recognizer: text says the language and length;
    progress is reported every BLOCK_S of a batch's audio, as the real one reports a long file's blocks."""

    BLOCK_S = 20.0

    supported_languages = ["en-US", "de-DE", "fr-FR"]
    latencies_ms = [80, 320, 560, 1120]

    def __init__(self):
        self.calls: list[dict] = []

    def language_note(self, language):
        """As Recognizer.language_note, for a recognizer that lists its languages."""
        if language not in ("auto", *self.supported_languages):
            raise UnsupportedLanguage(f"unknown language {language!r}; supported: auto, "
                                      f"{', '.join(self.supported_languages)}")
        return None

    def transcribe(
        self, audios, language="auto", latency_ms=None, mode="offline", decoder="rnnt",
        keep_lang_tags=False, batch_size=8, on_batch_done=None, progress=None, boost=None, beam_size=None,
    ):
        if latency_ms is not None and latency_ms not in (*self.latencies_ms, 160):
            raise ValueError(f"latency {latency_ms} ms is not supported; choose one of 80, 160, 320, 560, 1120")
        self.calls.append(
            dict(n=len(audios), lengths=[len(a) for a in audios], language=language, latency_ms=latency_ms,
                 mode=mode, decoder=decoder, keep_lang_tags=keep_lang_tags, batch_size=batch_size, boost=boost)
        )
        results, done_s = [], 0.0
        for start in range(0, len(audios), batch_size):
            batch = audios[start : start + batch_size]
            batch_s = sum(len(a) for a in batch) / SR
            for block_end in np.arange(self.BLOCK_S, batch_s, self.BLOCK_S):
                if progress:
                    progress(done_s + block_end)
            results += [self._transcript(a, language, latency_ms or 1120, mode) for a in batch]
            done_s += batch_s
            if on_batch_done:
                on_batch_done(len(batch))
            if progress:
                progress(done_s)
        return results

    @staticmethod
    def _transcript(audio: np.ndarray, language: str, latency_ms: int, mode: str) -> Transcript:
        """'<lang> <samples> done.' with one word per second-ish."""
        duration_s = len(audio) / SR
        lang = "en-US" if language == "auto" else language
        ws = [Word(lang, 0.0, 0.3, 0.9), Word(str(len(audio)), 0.4, 0.6, 0.8), Word("done.", 0.7, duration_s, 0.7)]
        return Transcript(
            text=f"{lang} {len(audio)} done.", tokens=[1, 2, 3], language=lang, words=ws, confidence=0.8,
            latency_ms=latency_ms, mode=mode, duration_s=duration_s,
        )


class FakePromptRecognizer(FakeRecognizer):
    """FakeRecognizer with a prompt config: its languages are checked by the real Recognizer's methods."""

    prompt_id = Recognizer.prompt_id
    language_note = Recognizer.language_note

    def __init__(self, prompt):
        super().__init__()
        self.cfg = types.SimpleNamespace(prompt=prompt)


def write_wav(path, seconds: float, rate_hz: int = SR) -> str:
    """A quiet noise file; returns its path as a string."""
    x = np.random.default_rng(0).uniform(-0.1, 0.1, round(seconds * rate_hz)).astype(np.float32)
    sf.write(path, x, rate_hz)
    return str(path)


def run(argv: list[str], recognizer=None) -> int:
    """Parse `babelcast transcribe ...` and run it with the fake recognizer."""
    args = cli.build_parser().parse_args(["transcribe", *argv])
    return cli.reported(lambda: cli.run_transcribe(args, recognizer or FakeRecognizer()))


@pytest.fixture
def files(tmp_path):
    """Three readable files (1.0 s, 0.5 s at 44.1 kHz, 0.25 s) and one that is not audio."""
    good = [
        write_wav(tmp_path / "one.wav", 1.0),
        write_wav(tmp_path / "two.flac", 0.5, rate_hz=44100),
        write_wav(tmp_path / "three.wav", 0.25),
    ]
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    return good, str(bad)


def test_single_file_text_has_no_prefix(files, capsys):
    (one, _, _), _ = files
    assert run([one]) == 0
    out, err = capsys.readouterr()
    assert out == "en-US 16000 done.\n" and err == ""


def test_several_files_one_unreadable(files, capsys):
    (one, two, three), bad = files
    fake = FakeRecognizer()
    assert run([one, bad, two, three], fake) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{one}: en-US 16000 done.", f"{two}: en-US 8000 done.", f"{three}: en-US 4000 done."]
    assert err.startswith(f"error: {bad}: not a readable audio file")
    assert "Traceback" not in err
    assert fake.calls[0]["lengths"] == [16000, 8000, 4000]  # the 44.1 kHz file was resampled


def test_missing_and_empty_files_fail_but_others_run(tmp_path, files, capsys):
    (one, _, _), _ = files
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    assert run([str(tmp_path / "missing.wav"), str(empty), one]) == 1
    out, err = capsys.readouterr()
    assert out == f"{one}: en-US 16000 done.\n"
    assert err.splitlines() == [
        f"error: {tmp_path / 'missing.wav'}: file not found",
        f"error: {empty}: contains no audio samples (zero-length audio)",
    ]


def test_options_reach_the_recognizer(files, tmp_path):
    (one, _, _), _ = files
    fake = FakeRecognizer()
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("Kubernetes:3\n\n  Anna Schmidt \n", encoding="utf-8")
    argv = [one, "--lang", "de-DE", "--latency", "160", "--mode", "streaming", "--decoder", "ctc",
            "--keep-lang-tags", "--batch-size", "3", "--boost", "Wrocław", "--boost-file", str(phrases),
            "--boost", "New York:1.5"]
    assert run(argv, fake) == 0
    assert fake.calls == [dict(n=1, lengths=[16000], language="de-DE", latency_ms=160, mode="streaming",
                               decoder="ctc", keep_lang_tags=True, batch_size=3,
                               boost=["Kubernetes:3", "Anna Schmidt", "Wrocław", "New York:1.5"])]


@pytest.mark.parametrize("argv, message", [
    (["--boost", ""], "error: empty boost phrase ''\n"),
    (["--boost", "Anna:lots"], "error: bad weight 'lots' in boost phrase 'Anna:lots': use PHRASE:WEIGHT with a "
                               "number above 0 and at most 20\n"),
    (["--boost-file", "no/such/phrases.txt"], "error: cannot read --boost-file no/such/phrases.txt: "
                                              "No such file or directory\n"),
])
def test_bad_boost_phrases_exit_2_with_one_line(files, argv, message, capsys):
    (one, _, _), _ = files
    fake = FakeRecognizer()
    assert run([one, *argv], fake) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == message and fake.calls == []


def test_ctc_streaming_end_to_end(tmp_path):
    """`--decoder ctc --mode streaming` as a user runs it (a subprocess, --model a hybrid .nemo) gives the
    CTC head's offline tokens at that latency; a checkpoint without a CTC head is refused with exit 2."""
    import babelcast
    from tiny import synth_audio
    from tiny_nemo import write_tiny_nemo

    hybrid = write_tiny_nemo(tmp_path / "hybrid.nemo", hybrid=True)
    audio = synth_audio(41000, seed=3).numpy()
    wav = tmp_path / "a.wav"
    sf.write(wav, audio, SR, subtype="FLOAT")
    argv = [sys.executable, "-m", "babelcast", "transcribe", str(wav), "--decoder", "ctc", "--mode", "streaming",
            "--latency", "320", "--lang", "de-DE", "--output", "json", "--keep-lang-tags"]
    done = subprocess.run([*argv, "--model", str(hybrid)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = babelcast.load_model(hybrid).transcribe([audio], language="de-DE", latency_ms=320, decoder="ctc",
                                                   keep_lang_tags=True)[0]
    assert got["tokens"] == want.tokens and got["tokens"]
    assert got["mode"] == "streaming" and got["latency_ms"] == 320
    plain = subprocess.run([*argv, "--model", str(write_tiny_nemo(tmp_path / "plain.nemo"))], capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == ("error: this checkpoint has no CTC head (not a hybrid RNNT+CTC model); "
                            "use the rnnt decoder\n")


def test_manifest_groups_by_language_and_keeps_input_order(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 1.0)
    write_wav(tmp_path / "b.wav", 0.5)
    lines = [
        {"audio_filepath": "a.wav", "target_lang": "en-US", "text": "ref a"},
        {"audio_filepath": "b.wav", "lang": "de-DE"},
        {"audio_filepath": "a.wav", "target_lang": "en-US", "offset": 0.25, "duration": 0.5},
        {"audio_filepath": "b.wav"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fake = FakeRecognizer()

    assert run([str(manifest), "--output", "json"], fake) == 0

    assert [(c["language"], c["lengths"]) for c in fake.calls] == [
        ("en-US", [16000, 8000]), ("de-DE", [8000]), ("auto", [8000])
    ]
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["source"], r["language"], r["text"]) for r in records] == [
        (str(tmp_path / "a.wav"), "en-US", "en-US 16000 done."),
        (str(tmp_path / "b.wav"), "de-DE", "de-DE 8000 done."),
        (str(tmp_path / "a.wav"), "en-US", "en-US 8000 done."),
        (str(tmp_path / "b.wav"), "en-US", "en-US 8000 done."),
    ]
    assert records[0]["reference"] == "ref a" and "offset_s" not in records[0]
    assert records[2]["offset_s"] == 0.25 and "reference" not in records[2]


def test_explicit_lang_overrides_manifest(tmp_path):
    write_wav(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"audio_filepath": "a.wav", "target_lang": "de-DE"}) + "\n")
    fake = FakeRecognizer()
    assert run([str(manifest), "--lang", "fr-FR"], fake) == 0
    assert [c["language"] for c in fake.calls] == ["fr-FR"]


def test_bad_manifest_fails_others_still_run(tmp_path, files, capsys):
    (one, _, _), _ = files
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n{oops\n')
    assert run([str(manifest), one]) == 1
    out, err = capsys.readouterr()
    assert out == "en-US 16000 done.\n"
    expected = "malformed JSON (Expecting property name enclosed in double quotes at column 2)"
    assert err == f"error: {manifest}:2: {expected}\n"


def test_json_output_is_one_object_per_line(files, capsys):
    (one, two, _), _ = files
    assert run([one, two, "--output", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in records] == [one, two]
    keys = {"source", "text", "tokens", "language", "words", "latency_ms", "mode", "trained_latency",
            "duration_s", "confidence"}
    assert keys <= set(records[0])
    assert records[0]["words"][1] == {"word": "16000", "start": 0.4, "end": 0.6, "confidence": 0.8}


@pytest.mark.parametrize(
    "fmt, stamp",
    [("srt", "1\n00:00:00,000 --> 00:00:01,000\n"), ("vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")],
)
def test_subtitles_single_file_go_to_stdout(files, capsys, fmt, stamp):
    (one, _, _), _ = files
    assert run([one, "--output", fmt]) == 0
    out = capsys.readouterr().out
    assert out == f"{stamp}en-US 16000 done.\n"


def test_subtitles_several_files_written_next_to_audio(files, tmp_path, capsys):
    (one, two, _), _ = files
    assert run([one, two, "--output", "srt"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{one} → {tmp_path / 'one.srt'}", f"{two} → {tmp_path / 'two.srt'}"]
    assert (tmp_path / "one.srt").read_text() == "1\n00:00:00,000 --> 00:00:01,000\nen-US 16000 done.\n"
    assert (tmp_path / "two.srt").read_text() == "1\n00:00:00,000 --> 00:00:00,500\nen-US 8000 done.\n"


def test_output_dir_for_every_format(files, tmp_path):
    (one, two, _), _ = files
    out_dir = tmp_path / "out" / "nested"
    assert run([one, two, one, "--output", "vtt", "--output-dir", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["one-2.vtt", "one.vtt", "two.vtt"]
    assert (out_dir / "one.vtt").read_text() == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nen-US 16000 done.\n"
    assert run([one, "--output", "json", "--output-dir", str(out_dir)]) == 0
    assert json.loads((out_dir / "one.json").read_text())["source"] == one
    assert run([one, "--output", "text", "--output-dir", str(out_dir)]) == 0
    assert (out_dir / "one.txt").read_text() == "en-US 16000 done.\n"


def test_unknown_language_exits_2_before_decoding(files, capsys):
    (one, _, _), bad = files
    fake = FakeRecognizer()
    assert run([one, bad, "--lang", "xx-XX"], fake) == 2
    out, err = capsys.readouterr()
    assert out == "" and fake.calls == []
    assert err == "error: --lang: unknown language 'xx-XX'; supported: auto, en-US, de-DE, fr-FR\n"


def test_unknown_language_in_manifest_names_the_line(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n{"audio_filepath": "a.wav", "lang": "tlh"}\n')
    assert run([str(manifest)]) == 2
    assert f"{manifest}:2: unknown language 'tlh'" in capsys.readouterr().err


def test_recognizer_value_error_exits_2_without_traceback(files, capsys):
    (one, _, _), _ = files
    assert run([one, "--latency", "999"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: latency 999 ms is not supported; choose one of 80, 160, 320, 560, 1120\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "xml"], "invalid choice: 'xml'"),
        (["--mode", "live"], "invalid choice: 'live'"),
        (["--decoder", "ctc2"], "invalid choice: 'ctc2'"),
        (["--batch-size", "0"], "expected a positive integer, got 0"),
        (["--latency", "fast"], "invalid int value: 'fast'"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["transcribe", "x.wav", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_subcommand_exits_2(capsys):
    assert cli.main([]) == 2
    assert "transcribe" in capsys.readouterr().err


def test_main_without_model_or_default_exits_2(files, monkeypatch, capsys):
    (one, _, _), _ = files
    monkeypatch.delattr(babelcast, "DEFAULT_MODEL", raising=False)
    assert cli.main(["transcribe", one]) == 2
    assert capsys.readouterr().err == "error: no default model is configured; pass --model PATH_OR_HUB_ID\n"


def test_main_loads_the_default_model(files, monkeypatch, capsys):
    (one, _, _), _ = files
    loaded = []

    def load_model(path_or_id, device="cpu"):
        loaded.append((path_or_id, device))
        return FakeRecognizer()

    monkeypatch.setattr(babelcast, "DEFAULT_MODEL", "nvidia/some-model", raising=False)
    monkeypatch.setitem(sys.modules, "babelcast.recognizer", types.SimpleNamespace(load_model=load_model))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert cli.main(["transcribe", one]) == 0
    assert cli.main(["transcribe", one, "--model", "/ckpt", "--device", "cuda"]) == 0
    assert loaded == [("nvidia/some-model", "cpu"), ("/ckpt", "cuda")]
    assert capsys.readouterr().out == "en-US 16000 done.\n" * 2


def test_model_that_fails_to_load(files, monkeypatch, capsys):
    (one, _, _), _ = files

    def load_model(path_or_id, device="cpu"):
        raise FileNotFoundError(2, "No such file or directory", path_or_id)

    monkeypatch.setitem(sys.modules, "babelcast.recognizer", types.SimpleNamespace(load_model=load_model))
    assert cli.main(["transcribe", one, "--model", "/nowhere"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot load model /nowhere: ")


def test_progress_bar_counts_audio_seconds_when_forced(tmp_path, capsys):
    paths = [write_wav(tmp_path / f"f{i}.wav", 0.1 + i) for i in range(6)]  # 15.6 s in all
    fake = FakeRecognizer()
    assert run([*paths, "--progress", "--batch-size", "1"], fake) == 0
    err = capsys.readouterr().err
    assert "16/16 audio-s" in err and "6/6" not in err
    assert [c["n"] for c in fake.calls] == [4, 2]  # audio is loaded batch_size * 4 inputs at a time


class RecordingBar(cli.tqdm):
    """The CLI's tqdm, recording the bar's position after every update."""

    positions: list[float] = []

    def update(self, n=1):
        super().update(n)
        RecordingBar.positions.append(self.n)


@pytest.fixture
def bar_positions(monkeypatch):
    RecordingBar.positions = []
    monkeypatch.setattr(cli, "tqdm", RecordingBar)
    return RecordingBar.positions


def test_progress_bar_moves_within_one_long_file(tmp_path, capsys, bar_positions):
    """One 70-s file: the bar advances as the recognizer reports blocks, not 0 → done."""
    path = write_wav(tmp_path / "long.wav", 70.0, rate_hz=8000)
    assert run([path, "--progress"], FakeRecognizer()) == 0
    assert bar_positions == pytest.approx([20, 40, 60, 70])
    assert "70/70 audio-s" in capsys.readouterr().err


def test_progress_bar_counts_a_real_recognizer_block_by_block(tmp_path, capsys, bar_positions):
    """The real recognizer's callback reaches the CLI's bar: a 65-s file (blocks) moves it several times."""
    import babelcast
    from tiny_nemo import write_tiny_nemo

    rec = babelcast.load_model(write_tiny_nemo(tmp_path / "tiny.nemo"))
    path = write_wav(tmp_path / "long.wav", 65.0)
    assert run([path, "--progress", "--lang", "de-DE"], rec) == 0
    assert len(bar_positions) >= 3 and bar_positions == sorted(bar_positions)
    assert bar_positions[-1] == pytest.approx(65.0) and bar_positions[0] < 40
    out = capsys.readouterr()
    assert "65/65 audio-s" in out.err and "Traceback" not in out.err


def test_no_progress_bar_when_not_a_tty(tmp_path, capsys):
    paths = [write_wav(tmp_path / f"f{i}.wav", 0.1) for i in range(6)]
    assert run(paths) == 0
    assert capsys.readouterr().err == ""


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "babelcast", "transcribe", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--latency" in done.stdout


def test_cli_and_package_import_without_torch():
    """`babelcast --help`, `data` and `stream` stay quick: torch loads only when a model does."""
    code = ("import sys, babelcast, babelcast.cli; assert 'torch' not in sys.modules, 'torch imported'; "
            "babelcast.Transcript; assert 'torch' not in sys.modules; babelcast.Recognizer; "
            "assert 'torch' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_untrained_locale_warns_once_and_unknown_ones_list_trained_first(tmp_path, capsys):
    from babelcast.config import PromptConfig, with_trained_locales

    dictionary = {"en-US": 0, "en": 0, "fr-FR": 8, "fr": 8, "de-DE": 9, "auto": 101}
    fake = FakePromptRecognizer(with_trained_locales(PromptConfig(128, dictionary), ["en-US", "de-DE"]))
    write_wav(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "lang": "fr"}\n{"audio_filepath": "a.wav", "lang": "FR-fr"}\n'
                        '{"audio_filepath": "a.wav", "lang": "de-DE"}\n')
    assert run([str(manifest)], fake) == 0
    err = capsys.readouterr().err
    assert err == ("warning: this model was not trained on fr-FR (trained: de-DE, en-US); its transcripts will "
                   "likely be in a trained language. Use a trained locale or auto\n")
    assert run([str(tmp_path / "a.wav"), "--lang", "xx"], fake) == 2
    assert capsys.readouterr().err == ("error: --lang: unknown language 'xx'; use auto, or trained: de-DE, "
                                       "en-US; untrained: fr-FR; aliases: en → en-US, fr → fr-FR\n")


def test_out_file_skips_what_a_previous_run_finished(files, tmp_path, capsys):
    good, _ = files
    out = tmp_path / "results.jsonl"
    assert run([*good, "--out", str(out)]) == 0
    full = out.read_text().splitlines()
    assert [json.loads(line)["source"] for line in full] == good and capsys.readouterr().out == ""
    out.write_text(full[0] + "\n" + full[1][:20])  # a kill cut the second line short
    fake = FakeRecognizer()
    assert run([*good, "--out", str(out)], fake) == 0
    assert out.read_text().splitlines() == full
    assert [c["n"] for c in fake.calls] == [2]  # the first input was not transcribed again


def test_out_file_that_is_not_results_is_refused(files, tmp_path, capsys):
    good, _ = files
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    assert run([*good, "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"error: {out}:1: not a results line of babelcast transcribe --out; use " \
                                      "another file\n"
    assert out.read_text() == "my notes\n"


def test_ray_without_the_ray_extra_says_how_to_install_it(files, monkeypatch, capsys):
    good, _ = files
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    assert run([*good, "--ray", "local"]) == 1
    assert capsys.readouterr().err == ("error: this command needs the ray package: run scripts/setup.sh, or pip "
                                       "install 'babelcast[ray]'\n")
