"""A local FLEURS copy in its published layout → manifest entries (a small fake copy made in the test)."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from babelcast import cli
from babelcast.data.fleurs import FleursError, available_languages, fleurs_locale, read_fleurs, write_fleurs_manifest
from babelcast.manifest import load_entry_audio, read_manifest

SR = 16000


def _row(i: int, name: str, raw: str, samples: int, gender: str = "FEMALE") -> str:
    chars = "|".join(raw.lower().replace(" ", "|"))
    return "\t".join([str(1000 + i), name, raw, raw.lower().strip(".!?\""), chars, str(samples), gender])


def make_fleurs(root, with_data_dir=True):
    """de_de with extracted audio, cmn_hans_cn with only the tar.gz, as google/fleurs publishes them."""
    base = root / "data" if with_data_dir else root
    rng = np.random.default_rng(0)
    texts = {
        "de_de": ['Er sagte: "Das ist gut."', "Die Sonne scheint heute.", "Fehlt auf der Platte."],
        "cmn_hans_cn": ["今天天气很好。"],
    }
    for code, sentences in texts.items():
        lang = base / code
        (lang / "audio").mkdir(parents=True)
        rows = []
        for i, text in enumerate(sentences):
            name = f"{10_000 + i}.wav"
            samples = SR // 2 + 800 * i
            rows.append(_row(i, name, text, samples))
            if text.startswith("Fehlt"):
                continue  # listed in the tsv, audio missing
            folder = lang / "audio" / "test"
            folder.mkdir(exist_ok=True)
            sf.write(folder / name, rng.uniform(-0.1, 0.1, samples).astype(np.float32), SR)
        (lang / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (lang / "dev.tsv").write_text("", encoding="utf-8")
    # cmn_hans_cn: pack the audio as audio/test.tar.gz (members test/<name>.wav) and remove the folder
    lang = base / "cmn_hans_cn" / "audio"
    with tarfile.open(lang / "test.tar.gz", "w:gz") as tar:
        for wav in sorted((lang / "test").iterdir()):
            tar.add(wav, arcname=f"test/{wav.name}")
            wav.unlink()
    (lang / "test").rmdir()
    return root


def test_locales():
    assert fleurs_locale("de_de") == "de-DE"
    assert fleurs_locale("en_us") == "en-US"
    assert fleurs_locale("cmn_hans_cn") == "zh-CN"
    assert fleurs_locale("pt_br") == "pt-BR"
    assert fleurs_locale("es_419") == "es-419"


@pytest.mark.parametrize("with_data_dir", [True, False])
def test_read_fleurs_published_layout(tmp_path, capsys, with_data_dir):
    root = make_fleurs(tmp_path, with_data_dir)
    assert available_languages(root) == ["cmn_hans_cn", "de_de"]
    utterances = read_fleurs(root, "test")
    assert "1 audio files listed in test.tsv are missing" in capsys.readouterr().err
    assert [(u.lang_code, u.locale) for u in utterances] == [("cmn_hans_cn", "zh-CN"), ("de_de", "de-DE"),
                                                              ("de_de", "de-DE")]
    de = [u for u in utterances if u.lang_code == "de_de"]
    assert de[0].text == 'Er sagte: "Das ist gut."'  # raw transcription, quotes kept (no csv quoting)
    assert de[0].duration_s == pytest.approx(0.5) and de[1].duration_s == pytest.approx(0.55)
    assert de[0].fleurs_id == "1000" and de[0].gender == "FEMALE"
    zh = utterances[0]
    assert zh.audio_path.is_file()  # extracted from audio/test.tar.gz on first use
    assert read_fleurs(root, "test", ["de_de"], max_per_lang=1)[0].text == de[0].text


def test_manifest_round_trip(tmp_path):
    root = make_fleurs(tmp_path)
    utterances = read_fleurs(root, "test", ["de_de"])
    manifest = write_fleurs_manifest(utterances, tmp_path / "out" / "fleurs_test.jsonl")
    entries = read_manifest(manifest)
    assert [e.text for e in entries] == [u.text for u in utterances]
    assert all(e.language == "de-DE" for e in entries)
    first = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    assert first["audio_filepath"].startswith("../")  # relative to the manifest's folder
    assert first["text_normalized"] == 'er sagte: "das ist gut'
    assert load_entry_audio(entries[0]).shape == (SR // 2,)


def test_errors(tmp_path):
    with pytest.raises(FleursError, match="not found"):
        read_fleurs(tmp_path / "nowhere")
    with pytest.raises(FleursError, match="unknown FLEURS split"):
        read_fleurs(tmp_path, "validation")
    with pytest.raises(FleursError, match="no <lang_code>/test.tsv"):
        read_fleurs(tmp_path, "test")


def test_cli_fleurs(tmp_path, capsys):
    root = make_fleurs(tmp_path)
    out = tmp_path / "m.jsonl"
    assert cli.main(["data", "fleurs", str(root), "--langs", "de_de", "--out", str(out)]) == 0
    assert "2 utterances in 1 languages" in capsys.readouterr().out
    assert len(read_manifest(out)) == 2
    assert cli.main(["data", "fleurs", str(tmp_path / "missing"), "--out", str(out)]) == 2
