"""Documentation and man-page text (readers, prose filter, train/test and out-of-domain separation) and
the voice pools (held-out accents, MBROLA voices and prosody never in a training pool)."""
from __future__ import annotations

import gzip
import shutil

import pytest

from babelcast.data import synth, text_sources as ts, voices
from babelcast.data.documents import CODE, html_paragraphs, mallard_paragraphs, man_paragraphs, read_document
from babelcast.data.split import VARIANTS, sentence_split


def test_html_paragraphs_mark_code_and_skip_preformatted():
    html = ('<html><head><title>T</title></head><body><div class="para">Install it with '
            '<span class="command"><strong>apt</strong></span> today.</div>'
            '<p>A plain sentence here. And <em>another</em> one.</p><pre>rm -rf /</pre>'
            '<p>See <code class="filename">/etc/fstab</code>.</p><ul><li>An item.</li></ul></body></html>')
    assert html_paragraphs(html) == [f"Install it with {CODE} today.", "A plain sentence here. And another one.",
                                     f"See {CODE}.", "An item."]


def test_mallard_paragraphs_mark_code_and_skip_info():
    page = ('<page xmlns="http://projectmallard.org/1.0/"><info><desc>Not prose.</desc></info><title>T</title>'
            '<p>Open the <gui>Settings</gui> panel.</p><p>Run <cmd>ls</cmd> now.</p>'
            '<list><item><p>Choose a file.</p></item></list></page>')
    assert mallard_paragraphs(page) == ["Open the Settings panel.", f"Run {CODE} now.", "Choose a file."]
    assert mallard_paragraphs("<page><p>unclosed") == []


def test_man_paragraphs_resolve_escapes_and_mark_fonts(tmp_path):
    troff = ('.\\" a comment\n.TH LS 1\n.SH NAME\nls \\- list\n.SH BESCHREIBUNG\nDas ist ein Satz\n'
             'mit zwei Zeilen\\(em wirklich.\n.PP\nDie Option \\fB\\-a\\fR zeigt alles.\n.B ls\n.nf\ncode here\n.fi\n'
             'Zuletzt \\(Bqdies\\(lq.\n')
    paragraphs = man_paragraphs(troff)
    assert "Das ist ein Satz mit zwei Zeilen— wirklich." in paragraphs
    assert any(CODE in p and p.startswith("Die Option") for p in paragraphs)
    assert not any("code here" in p for p in paragraphs)
    path = tmp_path / "ls.1.gz"
    path.write_bytes(gzip.compress(troff.encode()))
    assert read_document(path) == paragraphs
    with pytest.raises(ValueError, match="unknown document format"):
        read_document(tmp_path / "notes.txt")


@pytest.mark.parametrize("sentence, language, ok", [
    ("Wählen Sie den gewünschten Ordner aus.", "de", True),
    ("Drücken Sie z.B. die Taste.", "de", False),  # abbreviation with inner dots
    ("Use the -v switch for more output.", "en", False),  # an option
    ("Press the key marked F to continue.", "en", False),  # a lone letter that is not a word
    ("A short and plain sentence.", "en", True),
    ("These, in turn, require functional hardware to run.", "pl", False),  # untranslated English
    ("Komputer jest widoczny, kiedy panel jest otwarty.", "pl", True),
])
def test_is_prose(sentence, language, ok):
    assert ts.is_prose(sentence, language) is ok


def test_doc_sources_cover_the_six_languages_and_keep_man_pages_apart():
    for locale in ("en-US", "de-DE", "es-US", "it-IT", "pl-PL", "cs-CZ"):
        assert ts.doc_sources(locale, "docs") and ts.doc_sources(locale, "manpages")
    assert "manpages" not in ts.TRAIN_CORPORA
    assert not {s.package for s in ts.DOC_SOURCES if s.corpus == "docs"} & {
        s.package for s in ts.DOC_SOURCES if s.corpus == "manpages"}
    with pytest.raises(ValueError, match="unknown text corpus"):
        ts.missing_package("de-DE", "novels")


def test_man_pages_never_make_a_training_set():
    for texts, split in ((("manpages",), "train"), (("fortunes", "manpages"), "test")):
        with pytest.raises(synth.SynthError, match="out-of-domain"):
            synth.plan(["de-DE"], 1, split, texts=texts)
    with pytest.raises(synth.SynthError, match="--wide"):
        synth.plan(["de-DE"], 1, "test", wide=True)


def test_new_variants_leave_the_old_split_alone_and_are_split_too():
    assert not set(voices.NEW_VARIANTS) & set(VARIANTS)
    assert {voices.variant_split(v) for v in VARIANTS if v in voices.all_variants("test")} == {"test"}
    new_test = [v for v in voices.NEW_VARIANTS if voices.variant_split(v) == "test"]
    assert 0 < len(new_test) < len(voices.NEW_VARIANTS)
    with pytest.raises(ValueError):
        voices.variant_split("robosoft")


def test_pools_keep_held_out_voices_and_prosody_out_of_training():
    present = set(VARIANTS) | set(voices.NEW_VARIANTS)
    wide = voices.pool_speakers("wide", "train", "en-us", present, mbrola=True)
    held = voices.pool_speakers("held-out", "test", "en-us", present, mbrola=True)
    main_train = voices.pool_speakers("main", "train", "en-us", present)
    assert {"en-gb-scotland", "en-029"} <= set(held.espeak) and not voices.HELD_OUT & set(wide.espeak + wide.engines)
    assert set(held.engines) == {"mb-us3"} and "mb-us1" in wide.engines
    for language, voice in (("en", "en-us"), ("it", "it"), ("cs", "cs")):  # Festival: one voice held out each
        wide_f = voices.pool_speakers("wide", "train", voice, present, festival=True).engines
        held_f = voices.pool_speakers("held-out", "test", voice, present, festival=True).engines
        assert len(held_f) == 1 and set(wide_f) | set(held_f) == set(voices.FESTIVAL[language])
        assert not set(wide_f) & voices.HELD_OUT and voices.language_of(held_f[0]) == language
    assert not set(held.variants) & set(wide.variants + main_train.variants)

    def span(intervals):
        return [(low, high) for low, high in intervals]

    for trained in (voices.PROSODY["main"], voices.PROSODY["wide"]):
        for held_range, trained_range in ((held.prosody.rate, trained.rate), (held.prosody.pitch, trained.pitch)):
            for low, high in span(held_range):
                assert all(high <= t_low or low >= t_high for t_low, t_high in span(trained_range))
    assert voices.draw_interval(((0, 1), (3, 4)), 0.25) == 0.5 and voices.draw_interval(((0, 1), (3, 4)), 0.75) == 3.5
    assert voices.language_of("mb-mx2") == "es" and voices.language_of("en-gb-x-rp") == "en"


needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or any(ts.missing_package(loc) for loc in ("en-US", "de-DE")),
    reason="needs espeak-ng and the fortunes (scripts/setup.sh installs them)")


@needs_tools
def test_wide_and_held_out_plans_use_their_pools():
    train = synth.plan(["en-US", "de-DE"], 40, "train", seed=2, wide=True)
    held = synth.plan(["en-US", "de-DE"], 40, "voices", seed=2)
    assert all(sentence_split(j.text) == "train" for j in train) and all(sentence_split(j.text) == "test" for j in held)
    assert not {j.variant for j in train} & {j.variant for j in held}
    assert not {j.voice for j in train} & voices.HELD_OUT and {j.voice for j in held} & voices.HELD_OUT
    assert any(j.lead_s == 0 for j in train) and len({j.voice for j in train if j.locale == "en-US"}) > 2
    rates = {j.rate_wpm for j in held}
    assert all(r < 132 or r > 206 for r in rates)  # outside the first demo model's training rates too
