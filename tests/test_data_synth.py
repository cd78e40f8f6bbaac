"""`babelcast data synth`: plan determinism, disjoint splits, 16 kHz files, manifest, reuse, augmentation."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from babelcast import cli
from babelcast.data import synth, voices
from babelcast.data.split import sentence_split, voice_split
from babelcast.data.text_sources import SOURCES, missing_package
from babelcast.manifest import load_entry_audio, read_manifest

LOCALES = ["en-US", "de-DE"]
needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None
    or any(missing_package(loc) for loc in LOCALES),
    reason="needs espeak-ng, sox, fortunes and fortunes-de (scripts/setup.sh installs them)",
)


@needs_tools
def test_plan_is_deterministic_prefix_stable_and_disjoint():
    test = synth.plan(LOCALES, 12, "test", seed=3)
    assert test == synth.plan(LOCALES, 12, "test", seed=3)
    longer = synth.plan(LOCALES, 20, "test", seed=3)
    assert [j for j in longer if j.index < 12] == test  # a larger --n reuses the first files
    train = synth.plan(LOCALES, 40, "train", seed=3, voices=5, augment=True)
    assert all(sentence_split(j.text) == "test" and voice_split(j.variant) == "test" for j in test)
    assert all(sentence_split(j.text) == "train" and voice_split(j.variant) == "train" for j in train)
    assert not {j.text for j in test} & {j.text for j in train}
    assert not {j.variant for j in test} & {j.variant for j in train}
    for locale in LOCALES:
        assert len({j.variant for j in train if j.locale == locale}) == 5
        assert len({j.relpath for j in train if j.locale == locale}) == 40
    assert all(j.augment is not None for j in train) and all(j.augment is None for j in test)
    assert synth.plan(LOCALES, 12, "test", seed=4) != test  # the seed changes order and prosody...
    assert {sentence_split(j.text) for j in synth.plan(LOCALES, 12, "test", seed=4)} == {"test"}  # ...not the split


needs_festival = pytest.mark.skipif(
    shutil.which("text2wave") is None or not voices.festival_installed("fest-kal_diphone"),
    reason="needs festival and festvox-kallpc16k (scripts/setup.sh --test installs them)")


@needs_tools
@needs_festival
def test_festival_voices_speak_a_quarter_of_the_pool_with_a_manifest_line_of_their_own(tmp_path):
    train = synth.plan(["en-US"], 40, "train", seed=1, wide=True, festival=True)
    spoken = {j.voice for j in train if j.voice.startswith("fest-")}
    assert 4 <= sum(j.voice.startswith("fest-") for j in train) <= 20 and spoken <= {"fest-kal_diphone",
                                                                                      "fest-ked_diphone"}
    held = synth.plan(["en-US"], 40, "voices", seed=1, festival=True)
    assert {j.voice for j in held if j.voice.startswith("fest-")} <= {"fest-cmu_us_slt_arctic_hts"}
    only = synth.plan(["en-US"], 10, "voices", seed=1, festival=True, engine_share=1.0)
    assert {j.voice for j in only} == {"fest-cmu_us_slt_arctic_hts"}
    assert synth.plan(["en-US"], 40, "train", seed=1, wide=True, festival=True, engine_share=0.0) == synth.plan(
        ["en-US"], 40, "train", seed=1, wide=True)  # no share: the espeak-ng voices' plan, file for file
    with pytest.raises(synth.SynthError, match="a share from 0 to 1"):
        synth.plan(["en-US"], 1, "train", festival=True, engine_share=1.5)
    job = next(j for j in train if j.voice == "fest-kal_diphone")
    slow = dataclasses.replace(job, rate_wpm=job.rate_wpm // 2, relpath=job.relpath.replace(".wav", "_slow.wav"))
    report = synth.synthesize([job, slow], tmp_path, processes=1)
    assert not report.failures
    record, slow_record = report.records
    assert (record["engine"], record["accent"], record["variant"], record["pitch"]) == (
        "festival", "fest-kal_diphone", "fest-kal_diphone", None)
    assert "phones" not in record and read_manifest(report.manifest)[0].phones is None
    audio = load_entry_audio(read_manifest(report.manifest)[0])
    assert np.abs(audio).max() > 0.1 and sf.info(str(tmp_path / job.relpath)).samplerate == 16000
    assert slow_record["duration"] > 1.5 * record["duration"] - job.lead_s - job.tail_s  # the rate is applied


needs_flite = pytest.mark.skipif(not voices.flite_installed("flite-awb"),
                                 reason="needs flite (scripts/setup.sh --test installs it)")


@needs_tools
@needs_flite
def test_flite_voices_speak_english_with_slt_held_out_and_a_manifest_line_of_their_own(tmp_path):
    train = synth.plan(["en-US"], 30, "train", seed=2, wide=True, flite=True, engine_share=1.0)
    assert {j.voice for j in train} == {"flite-kal16", "flite-awb", "flite-rms"}  # slt: the held-out speaker
    assert {j.voice for j in synth.plan(["en-US"], 5, "voices", seed=2, flite=True, engine_share=1.0)} == {"flite-slt"}
    assert synth.plan(["de-DE"], 8, "train", seed=2, wide=True, flite=True) == synth.plan(
        ["de-DE"], 8, "train", seed=2, wide=True)  # English only: other languages' plans are unchanged
    job = dataclasses.replace(next(j for j in train if j.voice == "flite-awb"), text="-5 °C in Zürich, naïvely.")
    slow = dataclasses.replace(job, rate_wpm=job.rate_wpm // 2, relpath=job.relpath.replace(".wav", "_slow.wav"))
    report = synth.synthesize([job, slow], tmp_path, processes=1)
    assert not report.failures  # a leading "-" and letters outside ASCII are read, not taken as options or dropped
    record, slow_record = report.records
    assert (record["engine"], record["accent"], record["variant"], record["pitch"]) == (
        "flite", "flite-awb", "flite-awb", None)
    assert "phones" not in record and np.abs(load_entry_audio(read_manifest(report.manifest)[0])).max() > 0.1
    assert slow_record["duration"] > 1.5 * record["duration"] - job.lead_s - job.tail_s  # the rate is applied


def test_festival_text_keeps_letters_and_ascii_and_drops_what_its_rules_stop_at():
    assert synth.festival_text("Il «Sistema» è “Avviabile” e l’uomo – ok.", "iso-8859-1") == (
        'Il "Sistema" è "Avviabile" e l\'uomo   ok.')  # «Sistema» stopped the Italian voice ("no rule matches")
    assert synth.festival_text("Kůň — žluťoučký.", "iso-8859-2") == "Kůň   žluťoučký."
    assert synth.festival_text("Kůň", "iso-8859-1") == "K  "  # ů and ň are not in Latin-1


def test_plan_rejects_unknown_locales():
    with pytest.raises(synth.SynthError, match="unknown locale"):
        synth.plan(["xx-XX"], 1, "test")


@needs_tools
def test_synthesize_writes_16k_mono_files_and_a_manifest(tmp_path):
    jobs = synth.plan(LOCALES, 2, "test", seed=0)
    report = synth.synthesize(jobs, tmp_path, processes=2)
    assert (report.made, report.reused, report.failures) == (4, 0, [])
    entries = read_manifest(report.manifest)
    records = [json.loads(line) for line in report.manifest.read_text(encoding="utf-8").splitlines()]
    assert [r["target_lang"] for r in records] == ["en-US", "en-US", "de-DE", "de-DE"]
    for entry, record, job in zip(entries, records, jobs):
        assert not record["audio_filepath"].startswith("/")  # relative to the manifest folder
        assert entry.text == job.text and entry.language == job.locale
        info = sf.info(str(entry.audio_path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert record["duration"] == pytest.approx(info.duration, abs=1e-3)
        assert record["voice"] == f"{SOURCES[job.locale].voice}+{job.variant}"
        assert (record["accent"], record["variant"]) == (SOURCES[job.locale].voice, job.variant)
        audio = load_entry_audio(entry)
        assert np.abs(audio).max() > 0.1 and audio.shape[0] > 16000 * 0.5
        lead = int(job.lead_s * 16000)
        assert np.abs(audio[: lead - 160]).max() < 0.01  # the silence before the speech
    info = json.loads((tmp_path / "synth_info.json").read_text())
    assert info["made"] == 4 and info["synth_seconds_per_utterance"] > 0
    again = synth.synthesize(jobs, tmp_path, processes=1)
    assert (again.made, again.reused) == (0, 4)
    assert again.manifest.read_text() == report.manifest.read_text()


@needs_tools
def test_augmented_utterance_is_noisy_and_deterministic(tmp_path):
    jobs = [j for j in synth.plan(["en-US"], 30, "train", seed=1, augment=True) if j.augment.noise][:1]
    job = jobs[0]
    a, b = synth.synth_audio(job), synth.synth_audio(job)
    np.testing.assert_array_equal(a, b)
    lead = int(job.lead_s * 16000)
    assert np.abs(a[: lead // 2]).max() > 0  # noise in the leading silence
    assert np.abs(a).max() <= 0.95 + 1e-6


def test_add_noise_hits_the_snr():
    t = np.arange(32000) / 16000
    speech = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # no peak limiting at this level
    for color in ("white", "pink", "brown"):
        mixed = synth.add_noise(speech, color, 10.0, seed=0)
        noise = mixed - speech
        snr = 10 * np.log10((speech**2).mean() / (noise**2).mean())
        assert snr == pytest.approx(10.0, abs=0.2)


@needs_tools
def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "set"
    code = cli.main(["data", "synth", "--langs", ",".join(LOCALES), "--n", "1", "--split", "test", "--out", str(out),
                     "--jobs", "1"])
    assert code == 0
    assert "2 utterances (2 made" in capsys.readouterr().out
    assert len(read_manifest(out / "manifest.jsonl")) == 2
    assert cli.main(["data", "synth", "--langs", "xx-XX", "--out", str(out)]) == 2
    assert cli.main(["data", "synth", "--list"]) == 0


@needs_tools
def test_cli_synth_warns_when_an_engine_speaks_none_of_the_languages(tmp_path, capsys):
    code = cli.main(["data", "synth", "--langs", "de-DE", "--n", "1", "--split", "train", "--wide", "--flite",
                     "--out", str(tmp_path / "de"), "--jobs", "1"])
    assert code == 0  # espeak-ng speaks them all
    assert "warning: flite speaks none of de-DE (its languages: en); espeak-ng alone speaks them" in (
        capsys.readouterr().err)


@needs_tools
def test_cli_synth_reads_own_sentences(tmp_path, capsys):
    sentences = tmp_path / "own.tsv"
    sentences.write_text("# locale, sentence\nen-US\tKubernetes runs in Wrocław.\nde-DE\tAnna Schmidt kommt.\n"
                         "en-US\tHello there.\n", encoding="utf-8")
    out = tmp_path / "set"
    assert cli.main(["data", "synth", "--sentences", str(sentences), "--out", str(out), "--jobs", "1"]) == 0
    assert "3 utterances (3 made" in capsys.readouterr().out
    texts = [(e.language, e.text) for e in read_manifest(out / "manifest.jsonl")]
    assert sorted(texts) == [("de-DE", "Anna Schmidt kommt."), ("en-US", "Hello there."),
                             ("en-US", "Kubernetes runs in Wrocław.")]
    sentences.write_text("en-US Kubernetes without a tab\n", encoding="utf-8")
    assert cli.main(["data", "synth", "--sentences", str(sentences), "--out", str(out)]) == 2
    assert "own.tsv:1: expected LOCALE<TAB>SENTENCE" in capsys.readouterr().err
