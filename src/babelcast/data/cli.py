"""`babelcast data synth` and `babelcast data fleurs`: make or index evaluation / training sets."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from babelcast.argtypes import positive_int as _positive_int

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `babelcast data` (one sub-subcommand per data source)."""
    sub = parser.add_subparsers(dest="data_command", metavar="SOURCE")

    synth = sub.add_parser(
        "synth", help="synthesize a multilingual set with espeak-ng and sox (texts from Debian's fortunes packages)",
        description="Synthesize a multilingual speech set (16 kHz mono wav + NeMo manifest) with espeak-ng and sox. "
                    "Sentences come from Debian's fortune packages; the train and test splits use disjoint "
                    "sentences and voices.")
    synth.add_argument("--langs", default="all", help="comma-separated locales, or all (default); see --list")
    synth.add_argument("--n", type=_positive_int, metavar="N",
                       help="utterances per language (default 10, or each of --sentences once)")
    synth.add_argument("--sentences", type=Path, metavar="FILE",
                       help="read these sentences (LOCALE<TAB>SENTENCE lines) instead of the fortunes; "
                            "--langs defaults to the file's locales")
    synth.add_argument("--out", type=Path, help="output folder (manifest.jsonl, audio/, synth_info.json)")
    synth.add_argument("--split", choices=("train", "test", "voices"), default="test",
                       help="train or test sentences and voices; voices: test sentences spoken by the held-out "
                            "voices and prosody (docs/evaluation.md)")
    synth.add_argument("--texts", default="fortunes", metavar="CORPORA",
                       help="comma-separated text corpora: fortunes (default), docs (Debian's and GNOME's "
                            "documentation); manpages alone: the out-of-domain test set (never for training)")
    synth.add_argument("--wide", action="store_true",
                       help="train split: every espeak-ng voice and variant of the language, wider prosody, a "
                            "quarter of the utterances without leading silence (the v3 demo data)")
    synth.add_argument("--mbrola", action="store_true",
                       help="also MBROLA voices (espeak-ng mb-xx; Debian's non-free mbrola-* packages)")
    synth.add_argument("--festival", action="store_true",
                       help="also Festival voices (en, it, cs; Debian's festival and festvox-* packages); their "
                            "utterances have no phoneme timeline")
    synth.add_argument("--flite", action="store_true",
                       help="also flite voices (en; Debian's flite package); their utterances have no phoneme timeline")
    synth.add_argument("--engine-share", type=float, default=0.25, metavar="F",
                       help="the share of the utterances MBROLA, Festival and flite voices speak, when asked for "
                            "(default 0.25; 1: only them)")
    synth.add_argument("--seed", type=int, default=0, help="order of sentences, voices and prosody (not the split)")
    synth.add_argument("--voices", type=_positive_int, metavar="K",
                       help="voice variants per language, from the split's voices (default: all of them)")
    synth.add_argument("--augment", action="store_true", help="add reverberation, band-limiting, gain and noise")
    synth.add_argument("--jobs", type=_positive_int, metavar="P", help="parallel processes (default: CPU count)")
    synth.add_argument("--list", action="store_true", help="list the locales, their voices and packages, and exit")
    synth.add_argument("--count", action="store_true",
                       help="print the sentences of --langs per corpus of --texts and package, train/test (man pages: "
                            "those the out-of-domain set can use), and exit")
    synth.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a TTY")

    nonspeech = sub.add_parser(
        "nonspeech", help="make clips without speech (empty transcripts): silence, noise, hum, tones, music-like",
        description="Make clips without speech whose transcripts are empty (16 kHz mono wav + NeMo manifest): "
                    "for training a model to stay silent, and for the check that it does (babelcast eval "
                    "reports the non-empty transcripts of such a manifest).")
    nonspeech.add_argument("--langs", default="en-US,de-DE,es-US,it-IT,pl-PL,cs-CZ",
                           help="locales given to the clips in turn (their prompt language)")
    nonspeech.add_argument("--n", type=_positive_int, default=70, metavar="N", help="clips (default 70)")
    nonspeech.add_argument("--kinds", default="all", help="comma-separated kinds, or all (default): "
                                                          "silence,noise,hum,tone,sweep,clicks,music")
    nonspeech.add_argument("--split", choices=("train", "test"), default="test")
    nonspeech.add_argument("--seed", type=int, default=0)
    nonspeech.add_argument("--duration", type=float, metavar="S", help="every clip S seconds (default 0.5-8 s)")
    nonspeech.add_argument("--out", type=Path, required=True, help="output folder (manifest.jsonl, audio/)")

    fleurs = sub.add_parser(
        "fleurs", help="write a NeMo manifest for a local copy of FLEURS",
        description="Write a NeMo manifest for a local copy of FLEURS in its published layout: "
                    "ROOT/<lang_code>/{<split>.tsv, audio/<split>/*.wav} (or ROOT/data/...).")
    fleurs.add_argument("root", type=Path, metavar="ROOT")
    fleurs.add_argument("--langs", default="all", help="comma-separated FLEURS codes (de_de,en_us,...) or all")
    fleurs.add_argument("--split", choices=("train", "dev", "test"), default="test")
    fleurs.add_argument("--max-per-lang", type=_positive_int, metavar="N", help="first N utterances per language")
    fleurs.add_argument("--out", type=Path, required=True, metavar="MANIFEST", help="manifest to write (.jsonl)")


def run_data(args: argparse.Namespace) -> int:
    """Dispatch to the chosen data source."""
    if args.data_command == "synth":
        return _run_synth(args)
    if args.data_command == "fleurs":
        return _run_fleurs(args)
    if args.data_command == "nonspeech":
        return _run_nonspeech(args)
    print("error: choose a data source: babelcast data synth|nonspeech|fleurs --help", file=sys.stderr)
    return EXIT_USAGE


def _run_synth(args: argparse.Namespace) -> int:
    from . import synth
    from .split import TEST_SENTENCE_SHARE, TEST_VOICE_SHARE
    from .text_sources import SOURCES, available_locales

    if args.list:
        _list_sources()
        return EXIT_OK
    texts = tuple(t.strip() for t in args.texts.split(",") if t.strip())
    if args.count:
        return _count_sentences(args.langs, texts)
    if args.out is None:
        print("error: --out DIR is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        synth.check_tools()
        own = synth.read_sentences(args.sentences) if args.sentences else None
        everything = list(own) if own else available_locales(texts[0] if texts else "fortunes")
        locales = everything if args.langs == "all" else [s.strip() for s in args.langs.split(",") if s.strip()]
        if not locales:
            print("error: no locale available; install a fortunes package (see --list)", file=sys.stderr)
            return EXIT_USAGE
        n = args.n or (None if own else 10)
        jobs = synth.plan(locales, n, args.split, seed=args.seed, voices=args.voices, augment=args.augment, own=own,
                          texts=texts, wide=args.wide, mbrola=args.mbrola, festival=args.festival,
                          flite=args.flite, engine_share=args.engine_share)
    except (synth.SynthError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.mbrola:
        _warn_missing_mbrola(locales, args.split, args.wide)
    _warn_missing_engines(locales, [e for e, asked in (("festival", args.festival), ("flite", args.flite)) if asked])
    info = dict(split=args.split, langs=locales, n_per_lang=n, seed=args.seed, sentences=str(args.sentences or ""),
                voices=args.voices, augment=args.augment, test_sentence_share=TEST_SENTENCE_SHARE,
                test_voice_share=TEST_VOICE_SHARE,
                texts=list(texts), wide=args.wide, mbrola=args.mbrola, festival=args.festival, flite=args.flite,
                engine_share=args.engine_share if args.mbrola or args.festival or args.flite else None,
                text_sources=_sentence_counts(jobs), voices_used=sorted({j.espeak_voice.split("+")[0] for j in jobs}),
                voice_variants=sorted({j.variant for j in jobs if j.variant}))
    show = args.progress or sys.stderr.isatty()
    report = synth.synthesize(jobs, args.out, processes=args.jobs, progress=show, info=info)
    for failure in report.failures:
        print(f"error: {failure}", file=sys.stderr)
    per_utt = f"{report.synth_seconds / report.made:.3f} s per utterance per process" if report.made else "all reused"
    hours = sum(r["duration"] for r in report.records) / 3600
    print(f"{len(report.records)} utterances ({report.made} made, {report.reused} reused, {hours:.2f} h of audio) "
          f"in {report.seconds:.1f} s ({per_utt}) -> {report.manifest}")
    return EXIT_FAILED if report.failures else EXIT_OK


def _warn_missing_engines(locales: list[str], engines: list[str]) -> None:
    """Warning lines per engine asked for: the requested locales it speaks none of (espeak-ng alone speaks them),
    and its voices of a requested language that are not installed (they are left out)."""
    from .text_sources import SOURCES
    from .voices import ENGINE_LABELS, ENGINE_PACKAGES, ENGINE_VOICES, engine_installed, language_of

    languages = {loc: language_of(SOURCES[loc].voice) for loc in locales if loc in SOURCES}
    for engine in engines:
        table, name = ENGINE_VOICES[engine], ENGINE_LABELS[engine]
        unspoken = [loc for loc, lang in languages.items() if lang not in table]
        if unspoken:
            print(f"warning: {name} speaks none of {', '.join(unspoken)} (its languages: {', '.join(table)}); "
                  "espeak-ng alone speaks them", file=sys.stderr)
        missing = sorted({v for lang in languages.values() for v in table.get(lang, ()) if not engine_installed(v)})
        if missing:
            print(f"warning: {name} voices left out (not installed): {' '.join(missing)}; install with "
                  f"apt-get install -y {ENGINE_PACKAGES[engine]}", file=sys.stderr)


def _warn_missing_mbrola(locales: list[str], split: str, wide: bool) -> None:
    """One warning line naming the MBROLA packages of the pool that are not installed (they are left out)."""
    from .synth import installed_variants
    from .text_sources import SOURCES
    from .voices import missing_mbrola, pool_speakers

    pool = "held-out" if split == "voices" else "wide" if wide else "main"
    present = installed_variants()
    missing = sorted({pkg for loc in locales if loc in SOURCES
                      for pkg in missing_mbrola(pool_speakers(pool, "test" if split == "voices" else split,
                                                              SOURCES[loc].voice, present, True).engines)})
    if missing:
        print(f"warning: MBROLA voices left out (not installed): {' '.join(missing)}; install with "
              f"MBROLA=1 scripts/train_demo.sh deps3 (Debian contrib/non-free)", file=sys.stderr)


def _count_sentences(langs: str, texts: tuple[str, ...]) -> int:
    """`data synth --count`: a markdown table of sentences per locale, corpus and package."""
    from .split import sentence_key, sentence_split
    from .text_sources import available_locales, load_sentences, missing_package, training_keys

    rows = []
    for locale in available_locales() if langs == "all" else [s.strip() for s in langs.split(",") if s.strip()]:
        for corpus in texts:
            try:
                missing = missing_package(locale, corpus)
            except ValueError:
                continue
            if missing:
                print(f"error: the {corpus} texts for {locale} are missing; apt-get install -y {missing}",
                      file=sys.stderr)
                return EXIT_USAGE
            held = training_keys(locale) if corpus == "manpages" else frozenset()
            per_package: dict[str, list[int]] = {}
            for sentence in load_sentences(locale, corpus):
                counts = per_package.setdefault(sentence.source.split(":")[0], [0, 0])
                if corpus == "manpages":
                    counts[1] += sentence_key(sentence.text) not in held
                else:
                    counts[sentence_split(sentence.text) == "test"] += 1
            for package, (train, test) in per_package.items():
                rows.append(f"| {locale} | {corpus} | {package} | {train if corpus != 'manpages' else '-'} | {test} |")
    print("| locale | corpus | package | train sentences | test sentences |\n|---|---|---|---:|---:|")
    print("\n".join(rows))
    return EXIT_OK


def _sentence_counts(jobs) -> dict[str, dict[str, int]]:
    """Distinct sentences per locale and source package, for synth_info.json."""
    counts: dict[str, dict[str, int]] = {}
    for locale, text, source in sorted({(j.locale, j.text, j.source.split(":")[0]) for j in jobs}):
        counts.setdefault(locale, {}).setdefault(source, 0)
        counts[locale][source] += 1
    return counts


def _list_sources() -> None:
    """`data synth --list`: locales, their text packages per corpus, the voices of each pool."""
    from .split import split_variants
    from .text_sources import CORPORA, DOC_SOURCES, SOURCES, missing_package
    from .voices import (ENGINE_LABELS, ENGINE_VOICES, HELD_OUT, NEW_VARIANTS, accents, engine_installed, language_of,
                         variant_split)

    for locale, source in SOURCES.items():
        states = []
        for corpus in CORPORA:
            try:
                missing = missing_package(locale, corpus)
            except ValueError:
                continue  # no such texts for this language
            states.append(f"{corpus} {'installed' if missing is None else 'missing: apt-get install -y ' + missing}")
        engines = [f"{ENGINE_LABELS[engine]} " + (",".join(v + ("" if engine_installed(v) else "(missing)")
                                                            for v in table.get(language_of(source.voice), ())) or "-")
                   for engine, table in ENGINE_VOICES.items()]
        print(f"{locale:6} espeak-ng voices {','.join(accents(source.voice))}; " + "; ".join(engines + states))
    print(f"test variants ({len(split_variants('test'))}): {', '.join(split_variants('test'))}")
    print(f"train variants ({len(split_variants('train'))}): {', '.join(split_variants('train'))}")
    new = [f"{v}({variant_split(v)})" for v in NEW_VARIANTS]
    print(f"added variants, --wide and --split voices only ({len(new)}): {', '.join(new)}")
    print(f"held-out accents, MBROLA, Festival and flite voices (--split voices only): {', '.join(sorted(HELD_OUT))}")
    for corpus, what in (("docs", "documentation packages"),
                         ("manpages", "man-page packages (out-of-domain test only)")):
        print(f"{what}: {' '.join(sorted({s.package for s in DOC_SOURCES if s.corpus == corpus}))}")


def _run_nonspeech(args: argparse.Namespace) -> int:
    from .nonspeech import KINDS, plan_nonspeech, write_nonspeech

    locales = [s.strip() for s in args.langs.split(",") if s.strip()]
    kinds = KINDS if args.kinds == "all" else tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    try:
        jobs = plan_nonspeech(locales, args.n, args.split, args.seed, kinds, args.duration)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    info = dict(split=args.split, langs=locales, n=args.n, kinds=list(kinds), seed=args.seed, duration_s=args.duration)
    manifest = write_nonspeech(jobs, args.out, info)
    print(f"{len(jobs)} non-speech clips ({', '.join(kinds)}) -> {manifest}")
    return EXIT_OK


def _run_fleurs(args: argparse.Namespace) -> int:
    from .fleurs import FleursError, read_fleurs, write_fleurs_manifest

    langs = None if args.langs == "all" else [s.strip() for s in args.langs.split(",") if s.strip()]
    try:
        utterances = read_fleurs(args.root, args.split, langs, args.max_per_lang)
    except FleursError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not utterances:
        print("error: no FLEURS utterance with audio found", file=sys.stderr)
        return EXIT_FAILED
    path = write_fleurs_manifest(utterances, args.out)
    n_langs = len({u.lang_code for u in utterances})
    print(f"{len(utterances)} utterances in {n_langs} languages -> {path}")
    return EXIT_OK


